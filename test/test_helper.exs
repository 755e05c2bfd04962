# :exec_fuzz: the :exec fuzz cases, until the rewrite of the :exec layer lands.
ExUnit.start(exclude: [:slow_cluster, :stress, :scale, :exec_fuzz], capture_log: true)
