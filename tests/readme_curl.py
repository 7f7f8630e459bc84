"""A stand-in for the two curl calls of the README's tour, for machines without curl (run by
tests/test_readme.py): `curl -sf --retry N --retry-connrefused --retry-delay S URL` (GET until
it answers 2xx) and `curl -s URL -d BODY` (POST). Standard library only; exits non-zero as
curl -f would."""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    retries, delay, body, url, fail = 0, 1.0, None, None, False
    words = iter(argv)
    for word in words:
        if word == "--retry":
            retries = int(next(words))
        elif word == "--retry-delay":
            delay = float(next(words))
        elif word == "-d":
            body = next(words).encode()
        elif word.startswith("-"):
            fail = fail or "f" in word.lstrip("-") and not word.startswith("--")
        else:
            url = word if "://" in word else f"http://{word}"
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as answer:
                sys.stdout.write(answer.read().decode())
                return 0
        except urllib.error.HTTPError as error:
            sys.stdout.write(error.read().decode())
            return 22 if fail else 0
        except OSError:
            if attempt == retries:
                return 7
            time.sleep(delay)
    return 7


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
