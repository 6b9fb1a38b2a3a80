"""What a test learns of a page it drives: the requests it made, console errors, uncaught script errors
and dialogs, so that every test can say the page stayed on its own origin and raised nothing."""
from dataclasses import dataclass, field


@dataclass
class Watched:
    """What a page did: requests made, console errors, uncaught errors and dialogs (alert, confirm)."""
    origin: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def foreign_requests(self) -> list[str]:
        """Requests to anything but the page's own origin (blob: and data: URLs are the page's own)."""
        return [url for url in self.requests
                if not url.startswith((self.origin + "/", "blob:", "data:"))]

    def assert_clean(self, expected_statuses: tuple[int, ...] = ()) -> None:
        """No request left the origin, no script error, no dialog, and no console error but Chromium's own
        "Failed to load resource" lines for answers the test provoked on purpose (`expected_statuses`)."""
        assert not self.foreign_requests(), self.foreign_requests()
        assert not self.page_errors, self.page_errors
        assert not self.dialogs, self.dialogs
        provoked = tuple(f"the server responded with a status of {status}" for status in expected_statuses)
        unexpected = [text for text in self.console_errors
                      if not (provoked and text.startswith("Failed to load resource") and
                              any(words in text for words in provoked))]
        assert not unexpected, unexpected


def watch(page, origin: str) -> Watched:
    watched = Watched(origin)
    page.on("request", lambda request: watched.requests.append(request.url))
    page.on("console", lambda line: line.type == "error" and watched.console_errors.append(line.text))
    page.on("pageerror", lambda error: watched.page_errors.append(str(error)))

    def dismiss(dialog):
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    return watched
