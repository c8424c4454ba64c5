"""Running dmn unattended, and seeing what it does.

    jobs      the nightly job as data: its schedule and stages
    daemon    the job on a schedule, with logs and Prometheus gauges
    sql       SQL over a home: the lake's tables, the nights' runs, the bundles
    status    where a home stands, and whether it is whole (`check`)
    report    what the agents learned, as one HTML page

Server side: needs the `night` extra.
"""
