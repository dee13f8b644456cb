"""What the code reports to and is tested with, below everything that uses it.

``metrics``   the Prometheus metrics (read at scrape time from the live state they report).
``stats``     counters of the pipeline's work, shared with the web views and logs.
``faults``    fault injection at named points for tests (`FAULT_INJECTION`), off in production.
``process``   a supervised child process (start, ready check, stop with grace, die with parent).
"""
