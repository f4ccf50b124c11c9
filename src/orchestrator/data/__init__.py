"""Data: the shapes world, GQA-format scene graphs and captions, benchmark loaders.

Modules (imported on use, so importing this package stays cheap):
  shapes        scene sampling, rendering, Winoground pairs, ``write_shapes_dataset``
  scene_graph   GQA scene-graph types and ``*_sceneGraphs.json`` loading
  captions      generic/spatial/counting/described captions, ``describe``, focused ``summarise``
  detector      colour-threshold + connected-components detector for shapes images
  spatial_rule  GenEval's relative-position rule
  llm_summary   optional OpenAI-compatible client for model-written summaries
  image_text    ``ImageTextData`` and ``open_image_text``: any image-caption source as training data
"""
