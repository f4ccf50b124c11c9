"""The fault matrix as a test suite of its own: every case is a short real run (tiny configs, a
few steps) with one fault injected, and checks that nothing was lost from the journal."""
