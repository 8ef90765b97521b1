"""One view of the whole exchange: ``exchange-server status`` and the status page.

* :mod:`.gauges`: what the services export for it (beside matchprocess/observe.py)
* :mod:`.collect`: scrape every metrics endpoint and judge the result against thresholds
* :mod:`.page`: the live status page on the metrics port
"""
