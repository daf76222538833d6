"""Two-way subscriber sync: CRM contacts, leads and accounts <-> ESP subscribers, field by field.

``rules`` and ``transforms`` are the model (``[sync.<table>]`` lines); ``decide`` is the pure
per-field decision against the shadow (the last value both sides agreed on); ``engine`` runs
it over the peers' changes; docs/sync.md describes the whole.
"""
