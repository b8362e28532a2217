"""A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (no websocket library):
start headless Chromium, open a page, run JavaScript in it and in its frames, as a reader's browser
shows them after the page's scripts ran.

Chromium reads protocol messages (JSON, each ended by a NUL byte) from its fd 3 and writes to fd 4.
"""

import fcntl
import json
import os
import select
import subprocess
import tempfile
import time

from ferstudy import chromium


class CDPError(RuntimeError):
    pass


class Browser:
    def __init__(self, binary, timeout=60):
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(prefix="ferstudy-cdp-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds():  # the browser's fd 3 reads our commands, its fd 4 writes the answers
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]  # not 3 or 4
            os.dup2(high[0], 3)  # dup2 onto another number: inheritable
            os.dup2(high[1], 4)

        cmd = chromium.command(
            binary, self.profile.name, "--remote-debugging-pipe", "--window-size=1400,1000", "about:blank"
        )
        self.proc = subprocess.Popen(
            cmd,
            preexec_fn=child_fds,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "HOME": self.profile.name},
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events = []

    # ------------------------------------------------------------ protocol
    def call(self, method, params=None, session=None):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _read(self):
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise CDPError(f"no answer from the browser in {self.timeout} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise CDPError(
                    "the browser closed the pipe: " + self.proc.stderr.read().decode(errors="replace")[-2000:]
                )
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def wait_event(self, method, session=None, timeout=None):
        """The first event `method` (of `session`), already received or arriving within `timeout`."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and (session is None or event.get("sessionId") == session):
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                raise CDPError(f"no {method} event")
            self.events.append(self._read())

    # ------------------------------------------------------------ pages
    def open(self, url):
        """A new tab showing `url` after its load event: a Page."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        self.call("Page.enable", session=session)
        self.call("Runtime.enable", session=session)
        self.call(
            "Target.setAutoAttach",
            {"autoAttach": True, "waitForDebuggerOnStart": False, "flatten": True},
            session=session,
        )  # frames in their own process (site isolation) become sessions too
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session)
        return page

    def close(self):
        try:
            self.call("Browser.close")
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self.profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Page:
    def __init__(self, browser, session, context=None):
        self.browser, self.session, self.context = browser, session, context

    def js(self, expression):
        """The value of a JavaScript expression (promises awaited)."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        if self.context is not None:
            params["contextId"] = self.context
        result = self.browser.call("Runtime.evaluate", params, session=self.session)
        if "exceptionDetails" in result:
            raise CDPError(
                f"{expression[:80]}: {result['exceptionDetails'].get('exception', result['exceptionDetails'])}"
            )
        return result["result"].get("value")

    def wait_for(self, expression, timeout=30, what=None):
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CDPError(f"timed out waiting for {what or expression}")
            time.sleep(0.2)

    def frame(self, url_part, timeout=30):
        """The child frame whose URL has `url_part` in it, as a Page to run JavaScript in."""
        deadline = time.monotonic() + timeout
        while True:
            tree = self.browser.call("Page.getFrameTree", session=self.session)["frameTree"]
            for child in tree.get("childFrames", []):
                frame = child["frame"]
                if url_part in frame.get("url", ""):
                    world = self.browser.call(
                        "Page.createIsolatedWorld", {"frameId": frame["id"]}, session=self.session
                    )
                    return Page(self.browser, self.session, world["executionContextId"])
            for event in list(self.browser.events):  # an out-of-process frame: its own session
                info = event.get("params", {}).get("targetInfo", {})
                if event.get("method") == "Target.attachedToTarget" and url_part in info.get("url", ""):
                    return Page(self.browser, event["params"]["sessionId"])
            if time.monotonic() > deadline:
                raise CDPError(f"no frame at a URL with {url_part!r} in it")
            time.sleep(0.2)


REQUIRE_ENV = "FERSTUDY_REQUIRE_CHROMIUM"


def require_chromium():
    """The Chromium binary; without one the test is skipped, except where FERSTUDY_REQUIRE_CHROMIUM=1
    (set by .ci/run, which installs it): there a missing browser fails the test."""
    import pytest

    binary = chromium.find_chromium()
    if binary is None:
        why = (
            f"no headless Chromium (${chromium.ENV_VAR} or one of {', '.join(chromium.CANDIDATES)} on PATH; "
            "Debian: apt-get install chromium-headless-shell)"
        )
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {why}")
        pytest.skip(why)
    return binary
