"""Importers that reshape common export layouts into the pipeline's landing format.

The pipeline reads one long layout (``media/``, ``kpi/``, ``controls/``); real exports rarely come
that way, so each importer here turns one foreign layout into landing files and nothing more: checks
on the data itself stay in the pipeline, where every delivery passes them.
"""
