"""Host side of the emulated board: boot a built image under `micropython` (CPython).

    python -m tools.sim.emu [IMAGE] --state DIR [--seconds 10] [--load 2000]
                            [--held-low 0] [--world FILE] [--heap 1024wk]
                            [--console | --serve PORT]

IMAGE (default build/vfs.bin) is copied into the state directory the first time, with
the partition table the build made beside it (partitions.bin, and vfs.json for the flash
size; an image without one boots on the meter's 4MB table); after that the board boots
from DIR/vfs.bin on DIR/partitions.bin, so what the meter wrote (settings, logs, the
A/B state files) is there at the next boot, with the journal partition (DIR/journal.bin)
and the world's state (DIR/state.json: relay contacts, reset cause). A world's "table"
(a table name, e.g. "stock-4MB") boots the image on another table. --console connects
the terminal to the meter's console (the REPL port); --serve PORT puts it on a TCP port for mpremote
(`mpremote connect socket://127.0.0.1:PORT status`); without either the port is closed.
Prints the emulator's report (tools/sim/emuboot.py) as JSON; the exit code is its.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click

from tools.sim.host import micropython_cmd

ROOT = Path(__file__).resolve().parents[2]
EMUBOOT = ROOT / "tools/sim/emuboot.py"
REPORT = "EMU-REPORT "


def prepare(image, state_dir, world=None, seconds=None, fresh=False):
    """The state directory for a boot: the image copied in (first time, or fresh=True),
    world.json written (journal and state files in the directory); returns its path."""
    d = Path(state_dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    img = d / "vfs.bin"
    if fresh or not img.exists():
        shutil.copyfile(image, img)
        for name in ("journal.bin", "state.json", "partitions.bin", "vfs.json"):
            if (d / name).exists():
                (d / name).unlink()
        for name in ("partitions.bin", "vfs.json"):  # the table flashed with the image
            if Path(image).with_name(name).exists():
                shutil.copyfile(Path(image).with_name(name), d / name)
    cfg = {"journal": str(d / "journal.bin"), "state": str(d / "state.json")}
    if (d / "partitions.bin").exists():
        cfg["table"] = str(d / "partitions.bin")
        if (d / "vfs.json").exists():
            cfg["flash_size"] = json.loads((d / "vfs.json").read_text()).get("flash_size")
    cfg.update(world or {})
    if seconds is not None:
        cfg["run_s"] = seconds
    (d / "world.json").write_text(json.dumps(cfg, indent=1) + "\n")
    return d


def command(state_dir, heap="1024wk", repl=False, exe=None):
    """exe: the interpreter (default the venv's 64-bit micropython; tools/mpy32's 32-bit)."""
    d = Path(state_dir).resolve()
    cmd = [str(exe or micropython_cmd()), "-X", "heapsize=" + heap]
    if repl:
        cmd.append("-i")
    cmd += [str(EMUBOOT), str(d / "vfs.bin"), "--world", str(d / "world.json")]
    if repl:
        cmd.append("--repl")
    return cmd


def parse_report(stdout):
    for line in reversed(stdout.splitlines()):
        if line.startswith(REPORT):
            return json.loads(line[len(REPORT) :])
    return None


def boot(
    image,
    state_dir,
    world=None,
    seconds=None,
    heap="1024wk",
    stdin=b"",
    fresh=False,
    timeout=120,
    exe=None,
):
    """Boot once; returns {"rc", "report", "stdout", "stderr"}. `stdin`: bytes for the
    meter's console port (closed after them); `exe`: the interpreter (see command)."""
    d = prepare(image, state_dir, world, seconds, fresh)
    env = dict(os.environ)
    env.pop("MICROPYPATH", None)  # emuboot sets its own path
    proc = subprocess.run(
        command(d, heap, exe=exe),
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=str(d),
        env=env,
    )
    out = proc.stdout.decode(errors="replace")
    return {
        "rc": proc.returncode,
        "report": parse_report(out),
        "stdout": out,
        "stderr": proc.stderr.decode(errors="replace"),
    }


class PortServer:
    """The emulated board with its console port (stdin/stdout on a pty) served to one
    client at a time, on a pty device (`device`: `mpremote connect /dev/pts/N resume
    ...`, the fast way) or, with `port` (0: any free one), on a TCP port
    (`mpremote connect socket://127.0.0.1:PORT ...`). Everything the board prints is
    also kept (`output`) for the report at the end; with no client it is only kept.
    repl=True: `micropython -i` and emuboot --repl, MicroPython's own REPL once main.py
    returns (safe mode)."""

    def __init__(self, state_dir, port=None, heap="1024wk", repl=False):
        import pty
        import socket
        import tty

        self.listener = None
        self.device = None
        self.port = None
        self._client = None  # the pty master toward the client, when served on a pty
        if port is None:
            self._client, keep = pty.openpty()
            tty.setraw(keep)
            self._keep = keep  # held open: a client closing the device is no hang-up
            self.device = os.ttyname(keep)
        else:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("127.0.0.1", port))
            self.listener.listen(1)
            self.port = self.listener.getsockname()[1]
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        env = dict(os.environ)
        env.pop("MICROPYPATH", None)
        self.proc = subprocess.Popen(
            command(state_dir, heap, repl=repl),
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            cwd=str(state_dir),
            env=env,
        )
        os.close(slave)
        self.output = bytearray()
        self._thread = None

    def start(self):
        import threading

        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        return self

    def _send(self, conn, data):
        try:
            if self._client is not None:
                os.write(self._client, data)
            elif conn is not None:
                conn.sendall(data)
        except OSError:
            return None
        return conn

    def _pump(self):
        import select
        import socket

        conn = None
        while True:
            fds = [self.master]
            if self.listener is not None:
                fds.append(self.listener)
            if self._client is not None:
                fds.append(self._client)
            elif conn is not None:
                fds.append(conn)
            ready = select.select(fds, [], [], 0.5)[0]
            if self.listener is not None and self.listener in ready:
                c, _ = self.listener.accept()
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if conn is not None:
                    conn.close()
                conn = c
            if self.master in ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
                if not data:
                    break  # the board is gone
                self.output += data
                conn = self._send(conn, data)
            if self._client is not None and self._client in ready:
                try:
                    data = os.read(self._client, 4096)
                except OSError:
                    data = b""
                if data:
                    os.write(self.master, data)
            elif conn is not None and conn in ready:
                data = conn.recv(4096)
                if data:
                    os.write(self.master, data)
                else:
                    conn.close()
                    conn = None
            if self.proc.poll() is not None and self.master not in ready:
                break
        if conn is not None:
            conn.close()
        if self.listener is not None:
            self.listener.close()

    def wait(self, timeout=120):
        """Wait for the board to stop; {"rc", "report", "stdout", "stderr"}."""
        rc = self.proc.wait(timeout)
        if self._thread is not None:
            self._thread.join(5)
        err = self.proc.stderr.read().decode(errors="replace")
        out = bytes(self.output).decode(errors="replace")
        os.close(self.master)
        if self._client is not None:
            os.close(self._client)
            os.close(self._keep)
        return {"rc": rc, "report": parse_report(out), "stdout": out, "stderr": err}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        return self.wait()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image", default=str(ROOT / "build/vfs.bin"), type=click.Path(dir_okay=False))
@click.option("--state", "state_dir", required=True, help="State directory (image copy, journal).")
@click.option("--seconds", type=float, default=10, show_default=True, help="Run limit (0: none).")
@click.option("--load", "load_w", type=float, help="Load in watts while the relay is closed.")
@click.option("--held-low", type=int, multiple=True, help="GPIO held low at boot (0: BOOT key).")
@click.option("--world", type=click.Path(exists=True, dir_okay=False), help="World JSON.")
@click.option("--heap", default="1024wk", show_default=True, help="micropython -X heapsize.")
@click.option("--fresh", is_flag=True, help="Start again from IMAGE (new journal, state).")
@click.option("--console", is_flag=True, help="Connect this terminal to the meter's console.")
@click.option(
    "--serve", type=int, help="Serve the console port to mpremote: on a TCP port, 0 a pty."
)
def main(image, state_dir, seconds, load_w, held_low, world, heap, fresh, console, serve):
    """Boot a built image on the emulated board and print what happened."""
    cfg = json.loads(Path(world).read_text()) if world else {}
    if load_w is not None:
        cfg["load_w"] = load_w
    if held_low:
        cfg["held_low"] = list(held_low)
    if not Path(image).exists() and not (Path(state_dir) / "vfs.bin").exists():
        raise click.ClickException("%s: no image (python -m tools.build)" % image)
    if console:
        d = prepare(image, state_dir, cfg, seconds, fresh)
        rc = subprocess.call(command(d, heap), cwd=str(d))
        sys.exit(rc)
    if serve is not None:
        d = prepare(image, state_dir, cfg, seconds, fresh)
        srv = PortServer(d, serve or None, heap).start()
        where = srv.device if srv.device else "socket://127.0.0.1:%d" % srv.port
        click.echo("emu: console on %s (mpremote connect %s resume ...)" % (where, where))
        try:
            r = srv.wait(timeout=None)
        except KeyboardInterrupt:
            r = srv.stop()
        click.echo(json.dumps(r["report"], indent=1))
        sys.exit(r["rc"])
    r = boot(image, state_dir, cfg, seconds, heap, fresh=fresh, timeout=None)
    sys.stdout.write(r["stdout"])
    sys.stderr.write(r["stderr"])
    sys.exit(r["rc"])


if __name__ == "__main__":
    main()
