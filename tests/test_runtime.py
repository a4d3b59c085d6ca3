from aejax import runtime


def test_fast_cpu_flags_are_appended():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    flags = runtime.use_fast_cpu_flags(environ).split()
    assert flags[0] == "--xla_force_host_platform_device_count=8"
    assert set(runtime.CPU_XLA_FLAGS) <= set(flags) and environ["XLA_FLAGS"] == " ".join(flags)


def test_a_flag_the_user_set_wins():
    environ = {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256"}
    flags = runtime.use_fast_cpu_flags(environ).split()
    assert "--xla_cpu_prefer_vector_width=256" in flags and "--xla_cpu_prefer_vector_width=512" not in flags
    assert runtime.use_fast_cpu_flags(environ).split() == flags  # idempotent
