"""The dashboard: Jinja2 pages, static JS/CSS, Plotly figures and report exports.

``frontend.routes`` holds the page router (``router``) and ``mount_static(app)``;
``frontend.report`` renders the self-contained HTML export and the CSV.
"""
