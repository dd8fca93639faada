"""`tlbprobe audit`: every caller of the table-sync broadcast in a kernel tree, and the
reviewed reason its skip is safe, or "unaudited".

source.py     the tree as the audit reads it (a tarball unpacked in the cache, a series
              applied in a copy of the files it touches)
cscan.py      a C-aware reading of one file: comments, directives, #if conditions,
              function bodies, macros
callsites.py  call sites of the sync and the hook, through macro and inline aliases
table.py      the reviewed table of callers (kernels/audit/callers.yaml), checked on load
static.py     the answer per call site, and the facts each verdict rests on
render.py     text and JSON
"""
