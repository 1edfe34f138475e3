"Model definitions shared by the notebooks (one module per model family)."
