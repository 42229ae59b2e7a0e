"""Pure torch algorithms: feature visualisation, activation statistics, image encoding.

Takes modules and tensors, returns tensors and images. Knows nothing of the atlas database or the web.
"""
