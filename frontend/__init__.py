"""The dashboard: Jinja2 pages, static JS/CSS, Plotly figures and report exports.

Data flows one way: ``results_view`` reads results payloads into plain data (rungs, ladders,
curves, checkpoint metadata); ``figures`` draws them; ``views`` assembles what the templates show;
``routes`` holds the page router (``router``) and ``mount_static(app)``; ``report`` renders the
self-contained HTML export and the CSV.
"""
