"""`mlstack docs`: a static HTML report of a system, like `dbt docs`.

    collect.py   what it shows, read from the spec, build/ and the deploy state
    html.py      an HTML builder that escapes every value it is not told is markup
    layout.py    the page frame (inline CSS, no script, nothing loaded from outside)
    catalog.py   overview with the system graph, feature catalog, model card
    history.py   SLO verification, rollouts, monitoring, plan
    charts.py    the inline-SVG latency plots
    build.py     the pages as data, and writing them as one self-contained folder
    serve.py     serving that folder on 127.0.0.1
"""
