"""``tritonops tune``: find the best config of a served model (or an ensemble's composing models)
under a latency budget, without restarting the server or writing its repository, and promote it."""

from tritonops.tune.objective import Objective, Ranking
from tritonops.tune.result import TuneResult
from tritonops.tune.run import TuneOptions, resume_options, run_tune
from tritonops.tune.space import Candidate, ModelSpace

__all__ = ["Candidate", "ModelSpace", "Objective", "Ranking", "TuneOptions", "TuneResult", "resume_options",
           "run_tune"]
