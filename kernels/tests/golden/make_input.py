"""Writes 16 rows x 256 little-endian f32 of awkward inputs for the golden vectors."""
import random
import struct
import sys

random.seed(20261125)
rows = []
rows.append([random.uniform(-1, 1) for _ in range(256)])
rows.append([random.gauss(0, 1) * 10 ** random.uniform(-2, 2) for _ in range(256)])
rows.append([random.uniform(-1, 1) * 10 ** (i // 32 - 4) for i in range(256)])  # sub-block scales
rows.append([0.0] * 256)  # all-zero blocks
rows.append([0.75] * 256)  # constant
rows.append([(i % 17) * 0.5 - 4.0 for i in range(256)])  # ties
rows.append([float((i % 9) - 4) for i in range(256)])  # small integers
rows.append([65504.0 if i % 2 else -65504.0 * random.random() for i in range(256)])  # f16 limits
rows.append([3.0 if i == 77 else 0.0 for i in range(256)])  # one spike
rows.append([random.uniform(0.5, 1.5) for _ in range(256)])  # all positive
rows.append([-random.uniform(0.25, 1.25) for _ in range(256)])  # all negative
rows.append([random.uniform(-1, 1) ** 7 * 50 for _ in range(256)])  # heavy tails
rows.append([0.0 if i < 128 else random.uniform(-2, 2) for i in range(256)])  # half zero
rows.append([random.uniform(-1, 1) * 1e-3 + (40.0 if i % 64 == 5 else 0) for i in range(256)])  # outliers
rows.append([random.uniform(-1, 1) * 6e-5 for _ in range(256)])  # near f16 subnormal scales
rows.append([random.uniform(-1e4, 1e4) for _ in range(256)])  # large
flat = [v for r in rows for v in r]
sys.stdout.buffer.write(struct.pack(f"<{len(flat)}f", *flat))
