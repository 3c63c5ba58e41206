"""Command-line programs, installed as console commands (``uper-train``, ``uper-demo``) and run
by the root scripts ``train_net.py`` / ``demo.py``. Each module is imported only when its command
runs."""
