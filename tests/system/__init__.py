"""System tests: several processes, topologies, nginx, a browser, daemons and the deploy kit."""
