#!/usr/bin/env python3
"""Writes sim/traces/example.csv to stdout: five minutes of bursty web traffic.

    python3 sim/traces/make_example.py > sim/traces/example.csv

Deterministic: one seeded generator, and only its random() is used (the other helpers of
Python's random module have changed between versions; random() has not), so the file is
the same on every machine. Arrivals come from a non-homogeneous Poisson process (thinning):
a base rate that ramps up like a morning, plus two bursts. Service times are log-normal
(median about 80 ms) with a few slow requests, as a web application's usually are.
"""

import math
import random

SEED = 7
DURATION_S = 300.0
BURSTS = [(70.0, 20.0), (200.0, 20.0)]  # (start, length) in seconds, at BURST_RATE
BURST_RATE = 40.0
PEAK_RATE = BURST_RATE

# (key, weight, median service in seconds): static files are fast, search is slow.
KEYS = [
    ("/api/items", 40, 0.095),
    ("/api/search", 15, 0.190),
    ("/api/cart", 10, 0.110),
    ("/static/app.js", 20, 0.004),
    ("/static/app.css", 10, 0.003),
    ("/login", 5, 0.150),
]


def rate(t):
    """Requests per second at time t: a ramp from 3 to 7 req/s (about 5 on average)."""
    for start, length in BURSTS:
        if start <= t < start + length:
            return BURST_RATE
    return 3.0 + 4.0 * t / DURATION_S


def normal(rng):
    # Box-Muller by hand: random.gauss's algorithm is not promised to stay the same.
    u1 = 1.0 - rng.random()  # in (0, 1], so log is defined
    u2 = rng.random()
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def pick_key(rng):
    total = sum(w for _, w, _ in KEYS)
    x = rng.random() * total
    for key, weight, median in KEYS:
        if x < weight:
            return key, median
        x -= weight
    return KEYS[-1][0], KEYS[-1][2]


def service(rng, median):
    if rng.random() < 0.02:
        return 0.5 + 1.5 * rng.random()  # the slow tail: a cold cache, a lock, a big query
    return min(2.0, median * math.exp(0.7 * normal(rng)))


def main():
    rng = random.Random(SEED)
    print("# Example trace for drover-sim --load-trace: 5 minutes of bursty web traffic.")
    print("# Made by sim/traces/make_example.py (random.Random(7)); regenerate with")
    print("#   python3 sim/traces/make_example.py > sim/traces/example.csv")
    print("# Base rate ramps from 3 to 7 req/s; bursts of 40 req/s at 70-90 s and 200-220 s.")
    print("arrival_s,service_s,key")
    t = 0.0
    while True:
        t += -math.log(1.0 - rng.random()) / PEAK_RATE
        if t >= DURATION_S:
            break
        if rng.random() * PEAK_RATE >= rate(t):
            continue  # thinned away: the rate at t is below the peak
        key, median = pick_key(rng)
        s = max(0.001, service(rng, median))
        print(f"{t:.3f},{s:.3f},{key}")


if __name__ == "__main__":
    main()
