"""The reliability suite: crashes, outages, hostile input, isolation, limits, fuzzing."""
