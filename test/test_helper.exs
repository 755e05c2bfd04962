ExUnit.start(exclude: [:slow_cluster, :stress, :scale], capture_log: true)
