ExUnit.start(exclude: [:slow_cluster, :stress], capture_log: true)
