"""One module per tab of the page: each has ``build(backend)`` (its components, inside the page's Blocks) and
``wire(backend, ui)`` (its events; ``ui`` holds every tab's components, for the few events that update another tab)."""
