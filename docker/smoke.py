"""In-image smoke test: CrypTen imports, and the engine's simulator (two party
processes and the dealer, TLS over the container's loopback) matches its plaintext twin.

    docker run --rm --entrypoint python secure-meanshift:latest -c "$(cat docker/smoke.py)"
"""
import time

import numpy as np

from secure_meanshift.mpc._compat import import_crypten

import_crypten()
from secure_meanshift.centroid_match import match_error  # noqa: E402
from secure_meanshift.params import MeanShiftParams  # noqa: E402
from secure_meanshift.plaintext import reference_meanshift  # noqa: E402
from secure_meanshift.simulate import run_simulation  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(7)
    centres = np.array([[0.25, 0.3], [0.7, 0.75]])
    parts = [np.clip(centres[i % 2] + 0.04 * rng.standard_normal((30, 2)), 0, 1) for i in range(2)]
    params = MeanShiftParams(bandwidth=0.15, bounds=([0, 0], [1, 1]), n_dust=4, max_iter=20, seed=3,
                             seeding="dust")
    t0 = time.perf_counter()
    run = run_simulation(parts, params, timeout_s=60)
    ref = reference_meanshift(parts, params)
    err, unmatched = match_error(run.receiver.centroids, ref.centroids)
    print(f"smoke: simulator {len(run.receiver.centroids)} centroids in {time.perf_counter() - t0:.1f} s, "
          f"max |secure - twin| = {err:.1e}")
    assert unmatched == 0 and err < 1e-3, (run.receiver.centroids, ref.centroids)
    print("smoke: ok")


if __name__ == "__main__":
    main()
