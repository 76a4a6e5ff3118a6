"""Pictures of the customer's display during a simulated run (tools/sim/runner.py side).

With `--screens DIR` the runner puts the OLED on the simulated board and this takes the
panel model's glass (what the customer sees) at:
- each scenario step {"at_s": N, "name": "LABEL"} of `screens`, at that second;
- one second after each meter event and each token answer (the display redraws within
  its 250 ms period and pushes page by page), labelled with the event's kind or
  "token_" + the result name; events in the same second make one picture;
- the end of the run ("end").
Each is printed as {"scr": [t_s, label, glass hex, contrast]}; tools/sim/host.py writes
them as PNG files.
Runs under MicroPython.
"""

import json
import sys

AFTER_MS = 1000


class Screenshots:
    def __init__(self, board, steps):
        self.board = board
        self.clock = board.clock
        self.origin_ms = self.clock.now
        self.pending = []  # [due_ms, label]
        for at_s, label in steps:
            self.clock.at(at_s * 1000, lambda n=label: self.snap(n))
        self.clock.every(250, self.flush)

    def attach(self, app):
        """Run a display on this App (until the App runs one of its own)."""
        if getattr(app, "display", None) is None:
            from firmware.ui.display import Display

            app.display = Display(app, self.board.display, self.clock)
            app.extra_tasks.append(app.display.run())

    def after(self, label):
        """A picture AFTER_MS from now (joined with one already due then)."""
        due = self.clock.now + AFTER_MS
        for p in self.pending:
            if p[0] == due:
                if label not in p[1].split("+"):
                    p[1] += "+" + label
                return
        self.pending.append([due, label])

    def flush(self):
        now = self.clock.now
        keep = []
        for due, label in self.pending:
            if due <= now:
                self.snap(label)
            else:
                keep.append([due, label])
        self.pending = keep

    def snap(self, label):
        t_s = (self.clock.now - self.origin_ms) // 1000
        model = self.board.display_model
        sys.stdout.write(json.dumps({"scr": [t_s, label, model.glass().hex(), model.contrast]}))
        sys.stdout.write("\n")
