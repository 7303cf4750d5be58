"""The file-drop source (CSV files in watched folders), one module per responsibility.

* ``config``: ``FileSourceConfig`` (the registry's entry) and its checks.
* ``source``: ``FileSource``: watching the folders, choosing whose turn it is to be read,
  refusing what is not a regular file, loading and committing the checkpoint.
* ``reading``: reading one file's new complete lines and handing them over.
* ``rows``: what parsed rows become in each mode (``cmm`` readings, ``samples``).
* ``csv_parse``: CSV lines -> typed rows or a reason (pure).
* ``read``: regular files only, no blocking open, bounded reads (blocking calls).
* ``checkpoint``: what has been consumed, per file, across restarts.
* ``rowset``: the rows of a file already accepted (the duplicate check).
"""
