"""Quality-improvement measures (issue 8): definitions, computation, SPC signals, charts."""
