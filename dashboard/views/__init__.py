"""One module per page, each with a thin ``main()`` (registered in ``dashboard/app.py``).

The folder is not called ``pages/``: Streamlit treats a ``pages/`` folder
beside the entry script as the old file-based navigation, and on a process's
first run would serve a page file at its URL without running ``app.py``'s
login check.
"""
