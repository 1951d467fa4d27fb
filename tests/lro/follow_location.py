"""Follows one asyncgate job the way a plain HTTP client does, with Python's
requests: `python3 follow_location.py URL`.

POSTs to URL, prints `LOCATION <url>`, then GETs that URL (requests follows
redirects by itself) until a redirect takes it elsewhere, printing
`STATUS <status>` the first time the monitor shows each status. Ends with
one JSON line: the final answer (`result`, `body`, `url`, `redirects`), or
`{"error": ...}` when no redirect came within 30 seconds.
"""

import json
import sys
import time

import requests


def main() -> None:
    url = sys.argv[1]
    accepted = requests.post(url, data=b'{"from": "requests"}', timeout=10)
    location = accepted.headers["Location"]
    print("LOCATION", location, flush=True)
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = requests.get(location, timeout=10)
        if answer.history:
            print(
                json.dumps(
                    {
                        "result": answer.status_code,
                        "body": answer.text,
                        "url": answer.url,
                        "redirects": [r.status_code for r in answer.history],
                    }
                ),
                flush=True,
            )
            return
        status = answer.json()["status"]
        if status not in seen:
            seen.append(status)
            print("STATUS", status, flush=True)
        time.sleep(0.02)
    print(json.dumps({"error": "no redirect within 30 s", "seen": seen}), flush=True)


if __name__ == "__main__":
    main()
