"""The Ray edge, the only code that imports Ray: `cli` checks and loads a run, `driver` runs the grid through
Tune, `trainable` is the one function Tune calls per trial, `callbacks` save, show and draw what trials report."""
