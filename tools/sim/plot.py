"""PNG plot of a simulator report: power, balance and relay state against time."""

from decimal import Decimal


def plot(report, path, title="Prepaid meter simulation"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report["series"]
    hours = [p["t_s"] / 3600 for p in series]
    fig, (ax_p, ax_b, ax_r) = plt.subplots(
        3, 1, sharex=True, figsize=(10, 7), gridspec_kw={"height_ratios": [3, 3, 1]}
    )
    ax_p.step(hours, [p["power_w"] for p in series], where="post", color="tab:orange")
    ax_p.set_ylabel("power (W)")
    ax_b.plot(hours, [Decimal(p["balance"]) for p in series], color="tab:blue")
    ax_b.axhline(0, color="grey", linewidth=0.8)
    ax_b.set_ylabel("balance")
    ax_r.step(
        hours,
        [1 if p["relay"] == "closed" else 0 for p in series],
        where="post",
        color="tab:green",
    )
    ax_r.set_yticks([0, 1], ["open", "closed"])
    ax_r.set_ylabel("relay")
    ax_r.set_xlabel("hours")
    marks = {
        "low_credit": "tab:olive",
        "disconnect": "tab:red",
        "topup": "tab:green",
        "reconnect": "tab:cyan",
    }
    for e in report["events"]:
        color = marks.get(e["kind"])
        if color:
            ax_b.axvline(e["t_s"] / 3600, color=color, linestyle="--", linewidth=0.8)
            ax_b.annotate(
                e["kind"],
                (e["t_s"] / 3600, float(Decimal(e["balance"]))),
                fontsize=7,
                rotation=90,
                va="bottom",
                color=color,
            )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
