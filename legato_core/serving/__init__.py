"""The demo's serving layer, one module per job: the job queue, the shared resources, forget jobs, the grid image.

``legato_core.studio`` holds the session (:class:`~legato_core.studio.Studio`) and re-exports these names.
"""
