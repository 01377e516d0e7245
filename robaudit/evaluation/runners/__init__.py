"""The attack runners: how the evaluation runs each registry entry batch by batch and reports its rows.

A runner is ``runner(run, attack, eps)``: ``run`` is the evaluation (robaudit.evaluation.run.Run),
``attack`` the registry entry (its name names the rows, its cost sizes the progress), ``eps`` the
budget. One module per attack family.
"""
