"""pytest setup shared by the unit tests and the nbval notebook runs."""

import os

# Under pytest-xdist every worker trains in its own process and notebook kernels;
# with more threads than cores they slow each other down many times over.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
