"""Layer 1: functions that build keras.Model backbones. Depends on keras and numpy only."""
