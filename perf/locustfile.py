"""Open-loop Poisson load on a Triton model, for running locust by hand.

The implementation lives in the package (``tritonops/perf/locustfile.py``) so that ``tritonops
loadtest`` works from an installed tritonops; this file re-exports its users. ``tritonops loadtest``
writes the JSON config this needs (``TRITONOPS_LOADTEST_CONFIG``); to run locust by hand, reuse one:

    TRITONOPS_LOADTEST_CONFIG=loadtest_results/mlp/locust_config.json \\
        locust -f perf/locustfile.py --headless -u 1 -r 1 -t 60s GrpcUser
"""

from tritonops.perf.locustfile import GrpcUser, HttpBinaryUser, HttpJsonUser

__all__ = ["GrpcUser", "HttpBinaryUser", "HttpJsonUser"]
