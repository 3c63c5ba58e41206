"""Settings shared by every test directory."""

import os

from hypothesis import settings

# Property-based tests draw the same examples on every run (CI is reproducible) and have no
# per-example deadline (a busy 2-core machine is slow at times); each test sets its own
# max_examples. HYPOTHESIS_PROFILE=explore draws new examples, to hunt for failures locally.
settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
