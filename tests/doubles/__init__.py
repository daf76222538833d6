"""Hand-written, in-process test doubles of the peers, each under a contract suite.

``FakeEsp`` (``EspClient``), ``FakeCrm`` (``CrmClient``) and ``FakeDrop`` (``FileDrop``) let the
unit tests of the steps drive every branch quickly and look at what reached the peer. They are
kept only because the contract suites run over them as well as over the real adapter against
its sandbox (tests/integration/test_esp_contract.py, test_crm_contract.py,
test_file_drop_contract.py): a double refuses what the real adapter refuses. Fault knobs (a
refused address, an import that errors, a 429 storm ...) are named attributes, off by default.
See docs/architecture.md, "Test doubles".
"""
