"""What the load scripts share (benches/e2e_load.sh, benches/forward.sh):
request bodies of SDK-shaped events, reading ferry's /metrics, a process's
CPU time."""

import json
import math
import re
import urllib.request

from sdk_events import browser

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$', re.M)


def write_bodies(work, users):
    """Writes request bodies of 100 events and returns their paths. Body j
    holds events k = 100 j .. 100 j + 99, of users k % users: with
    ceil(users / 100) bodies, cycled by load_gen, every user gets the same
    share of the events, and a request holds min(users, 100) users."""
    users = int(users)
    paths = []
    for j in range(max(1, math.ceil(users / 100))):
        batch = {"batch": [browser(100 * j + i, users) for i in range(100)],
                 "sentAt": "2024-05-01T12:00:00.000Z"}
        path = f"{work}/batch-{j}.json"
        with open(path, "w") as f:
            json.dump(batch, f)
        paths.append(path)
    return paths


def scrape(port):
    """ferry's /metrics on 127.0.0.1:port, as {name: [(labels, value)]}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for name, labels, value in LINE.findall(text):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels or ""))
        out.setdefault(name, []).append((lab, float(value)))
    return out


def metric(m, name, **labels):
    """The sum of `name` over the series whose labels match."""
    return sum(v for lab, v in m.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
