"""Export: students as files that other runtimes run.

    export_gguf, GGUF_TYPES, GGUFExport   a checkpoint as one GGUF file for llama.cpp / Ollama
    ExportError                           input the export refuses (one line)
    llamacpp.LlamaCppModel, LlamaCppBackend, quantize_file
                                          llama.cpp through llama-cpp-python (optional)
"""

from convdistill.export.gguf_file import GGUF_TYPES, ExportError, GGUFExport, export_gguf

__all__ = ["GGUF_TYPES", "ExportError", "GGUFExport", "export_gguf"]
