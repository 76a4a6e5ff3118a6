"""Virtual time for the simulated board: the clock protocol of drivers.clock.

Tasks that `await clock.sleep_ms(ms)` are parked until the simulation driver moves
virtual time to their wake-up; `run()` jumps from one wake-up (or scheduled action)
to the next, so an idle simulated second costs only the work done in it.
"""

import asyncio

_MASK = 0x3FFFFFFF  # MicroPython ticks wrap at 2**30


class VirtualClock:
    def __init__(self, start_ms=0):
        self.now = start_ms  # virtual milliseconds since the simulation began
        self._sleepers = []  # [wake_ms, event]
        self._actions = []  # (at_ms, order, fn, hold)
        self._order = 0
        self.halt = None  # an exception to stop run() with (a power cut: see SimBoard)
        self._every = []  # [next_ms, period_ms, fn]
        self._running = False

    def ticks_ms(self):
        return self.now & _MASK

    def ticks_diff(self, a, b):
        d = (a - b) & _MASK
        return d - (_MASK + 1) if d & 0x20000000 else d

    async def sleep_ms(self, ms):
        ev = asyncio.Event()
        self._sleepers.append((self.now + (ms if ms > 0 else 0), ev))
        await ev.wait()

    def at(self, at_ms, fn, hold=False):
        """Schedule fn() at virtual time at_ms (after the tasks due at the same time).

        hold=True: an action that needs the meter running (a top-up, a button press); if
        the power is off at at_ms it happens when the power returns.
        """
        self._order += 1
        a = (at_ms, self._order, fn, hold)
        acts = self._actions
        if not self._running:
            acts.append(a)  # run() sorts them when it starts
            return
        # during a run the list is kept in descending order (due ones pop from the end):
        # an action scheduled by another (a keypad model's presses) lands in its place
        j = len(acts)
        while j > 0 and (acts[j - 1][0], acts[j - 1][1]) < (at_ms, self._order):
            j -= 1
        acts.insert(j, a)

    def outage(self, until_ms):
        """The meter is dead until until_ms: its sleeping tasks are gone, the world's
        actions (load steps, faults) still happen, held actions wait for the power,
        periodic samplers skip the dead time."""
        self._sleepers = []
        actions = self._actions
        actions.sort()
        actions.reverse()
        held = []
        while actions and actions[-1][0] <= until_ms:
            a = actions.pop()
            if a[3]:
                held.append(a)
            else:
                self.now = a[0]
                a[2]()
        self.now = until_ms
        for a in held:
            actions.append((until_ms, a[1], a[2], a[3]))
        for e in self._every:
            while e[0] < until_ms:
                e[0] += e[1]

    def every(self, period_ms, fn, first_ms=0):
        """Call fn() at first_ms and every period_ms after (after the tasks due then)."""
        self._every.append([first_ms, period_ms, fn])

    def _check(self):
        # CPython's asyncio keeps a BaseException raised inside a task in the task;
        # MicroPython's stops the loop with it. Either way run() ends with it here.
        if self.halt is not None:
            e = self.halt
            self.halt = None
            raise e

    async def run(self, end_ms, settle=3):
        """Advance virtual time until end_ms, running actions and waking sleepers."""
        actions = self._actions
        actions.sort()
        actions.reverse()  # due actions pop from the end
        self._running = True
        try:
            await self._run(actions, end_ms, settle)
        finally:
            self._running = False

    async def _run(self, actions, end_ms, settle):
        while True:
            for _ in range(settle):  # let every woken task run up to its next wait
                await asyncio.sleep(0)  # sleep_ms is MicroPython-only
            self._check()
            t = end_ms + 1
            for s in self._sleepers:
                if s[0] < t:
                    t = s[0]
            if actions and actions[-1][0] <= t:
                t = actions[-1][0]
            for e in self._every:
                if e[0] < t:
                    t = e[0]
            if t > end_ms:
                self.now = end_ms
                return
            self.now = t
            due = [s for s in self._sleepers if s[0] <= t]
            if due:
                self._sleepers = [s for s in self._sleepers if s[0] > t]
                for s in due:
                    s[1].set()
                for _ in range(settle):
                    await asyncio.sleep(0)  # sleep_ms is MicroPython-only
                self._check()
            while actions and actions[-1][0] <= t:
                actions.pop()[2]()
            for e in self._every:
                if e[0] <= t:
                    e[0] += e[1]
                    e[2]()
