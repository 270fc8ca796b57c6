"""Audio for calls: G.711, resampling, framing, playout and the per-call media bridge."""
