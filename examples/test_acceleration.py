"""The whole user-facing suite: one test, parametrized by pytest-diffaccel over the techniques."""


def test_acceleration(diffaccel_pipeline, diffaccel_benchmark):
    diffaccel_benchmark(diffaccel_pipeline)
