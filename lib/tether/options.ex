defmodule Tether.Options do
  @moduledoc false
  # The one validator of Tether's options: `validate/2,3` checks what each entry point is given
  # (`:run`, `:remote`, `:stream`, `:manage`, `:cmd`, `:daemon`) and builds the
  # `%Tether.Spec{}` that the NIF decodes without further checks. Bad input raises
  # `ArgumentError` naming the option (the messages name the public function: `Tether.run/2`,
  # `Tether.cmd/3`, …); nothing else in lib/ checks an option.

  require Logger

  # 2^32 ms, about 49 days: beyond that a timeout is a mistake, and it must fit the NIF's u64.
  @max_timeout_ms 4_294_967_296
  @rlim_infinity 18_446_744_073_709_551_615
  @u64_limit 18_446_744_073_709_551_616

  @doc """
  Validates the options of `context` for `command` and builds the spec, as run by the caller:

    * `:run` - `Tether.run/2` (a `{:node, node}` elsewhere also gets `:remote`'s checks);
    * `:remote` - a run on another node: output funs and `:print` are refused;
    * `:stream` - `Tether.stream/2`: returns `{spec, run_options, input}`, the options the
      stream runs with and its `:input`.

  `validate(:manage, options)`, `validate(:cmd, options)` and `validate(:daemon, options)` check
  the options of `Tether.manage/2`, `Tether.cmd/3` and `Tether.Daemon`.

      iex> spec = Tether.Options.validate(:run, ["echo", "hi"], [:stdout, kill_timeout: 2])
      iex> {spec.argv, spec.stdout == {:pipe, self()}, spec.stop}
      {["echo", "hi"], true, [{:signal, 15, 2000}, {:signal, 9, 0}]}

      iex> Tether.Options.validate(:run, "echo hi", [{:stderr, :stdout}]) |> Map.take([:argv, :stderr])
      %{argv: ["/bin/sh", "-c", "echo hi"], stderr: :other}

      iex> Tether.Options.validate(:run, ["true"], [colour: :blue])
      ** (ArgumentError) unknown option :colour in Tether.run/2 options
  """
  @spec validate(:run | :remote | :daemon_run, Tether.command(), Tether.options()) ::
          Tether.Spec.t()
  @spec validate(:stream, Tether.command(), Tether.options()) ::
          {Tether.Spec.t(), Tether.options(), nil | iodata | Enumerable.t()}
  def validate(:run, command, options) do
    spec = run_spec!(command, options)
    if spec.node != node(), do: remote!(spec), else: spec
  end

  def validate(:remote, command, options), do: remote!(run_spec!(command, options))

  def validate(:stream, command, options) when is_list(options) do
    proper_list?(options) or
      raise ArgumentError,
            "Tether.stream/2 options must be a proper list, got: #{inspect(options)}"

    {input, options} = pop_input(options)

    Enum.each(options, fn option ->
      key = option_key(option)

      key not in [:stdout, :monitor, :active, :sync] or
        raise ArgumentError, "option #{inspect(key)} is set by Tether.stream/2"
    end)

    run_options =
      [:stdout, :monitor, active: :once] ++ if(input, do: [:stdin], else: []) ++ options

    # Validated now, in the caller, so a bad option raises where the stream is built.
    {run_spec!(command, run_options), run_options, input}
  end

  # A daemon's run (Tether.Daemon.start_link/1): checked where it will run, like a stream's.
  def validate(:daemon_run, command, options), do: run_spec!(command, options)

  def validate(:stream, _command, options) do
    raise ArgumentError, "Tether.stream/2 options must be a list, got: #{inspect(options)}"
  end

  @manage_options [:monitor, :link, :kill_timeout, :kill, :kill_sequence, :kill_group, :detach] ++
                    [:success_exit_code]

  @doc false
  # `:manage`: the spec of an adoption (`kill_group` defaults to false). `:cmd`: the options of
  # cmd/3 as a map, with the run options left in `:run`. `:daemon`: the daemon's own options
  # (and which of `:run` it sets itself), returned as given.
  @spec validate(:manage, Tether.options()) :: Tether.Spec.t()
  @spec validate(:cmd, keyword) :: %{
          into: Collectable.t(),
          input: nil | iodata | Enumerable.t(),
          timeout: timeout,
          stderr_to_stdout: boolean,
          arg0: binary | nil,
          run: keyword
        }
  @spec validate(:daemon, keyword) :: keyword
  def validate(:manage, options) when is_list(options) do
    proper_list?(options) or
      raise ArgumentError,
            "Tether.manage/2 options must be a proper list, got: #{inspect(options)}"

    Enum.each(options, fn option ->
      option_key(option) in @manage_options or
        raise ArgumentError, "option #{inspect(option)} is not supported by Tether.manage/2"
    end)

    build!(["managed"], [kill_group: false] ++ options, self())
  end

  def validate(:manage, options) do
    raise ArgumentError, "Tether.manage/2 options must be a list, got: #{inspect(options)}"
  end

  def validate(:cmd, options) do
    proper_list?(options) or
      raise ArgumentError, "Tether.cmd/3 options must be a proper list, got: #{inspect(options)}"

    Enum.each(options, &cmd_option!/1)
    {into, options} = Keyword.pop(options, :into, "")
    {input, options} = Keyword.pop(options, :input)
    {timeout, options} = Keyword.pop(options, :timeout, :infinity)
    {stderr_to_stdout, options} = Keyword.pop(options, :stderr_to_stdout, false)
    {arg0, options} = Keyword.pop(options, :arg0)
    {_parallelism, options} = Keyword.pop(options, :parallelism)

    %{
      into: into,
      input: input,
      timeout: timeout,
      stderr_to_stdout: stderr_to_stdout,
      arg0: arg0,
      run: options
    }
  end

  def validate(:daemon, options) do
    daemon_options!(options)
    options
  end

  # The spec of a run wherever it runs: `{:node, node}` (the first one) says where, the rest is
  # checked by build!/3. Anything but a proper list goes through untouched: build!/3 rejects it.
  defp run_spec!(command, options) do
    {node, options} = take_node(options)
    %{build!(command, options, self()) | node: node}
  end

  defp take_node([{:node, node} | rest]) when is_atom(node) and node != nil, do: {node, rest}

  defp take_node([{:node, other} | _]),
    do: raise(ArgumentError, "invalid value for :node option: #{inspect(other)}")

  defp take_node([option | rest]) do
    {node, rest} = take_node(rest)
    {node, [option | rest]}
  end

  defp take_node(options), do: {node(), options}

  # A run on another node: what would run there must be data (funs and :print would run on the
  # remote node).
  defp remote!(spec) do
    spec.handlers == %{} or
      raise ArgumentError, "output funs and :print cannot be used with the :node option"

    spec.background_owner == nil or
      raise ArgumentError, "{:background_jobs, {:keep, pid}} cannot be used with the :node option"

    spec
  end

  defp option_key(option) do
    if is_tuple(option) and tuple_size(option) > 0, do: elem(option, 0), else: option
  end

  # ── Stream and cmd/3 ─────────────────────────────────────────────────────────────────────

  # `:input`, checked here so that a bad one raises in the caller, not in the feeding process.
  defp pop_input(options) do
    # Not Keyword.pop/2: run/2 options may be atoms (`:pty`).
    {inputs, options} = Enum.split_with(options, &match?({:input, _}, &1))
    input = with [{:input, input} | _] <- inputs, do: input, else: (_ -> nil)

    input?(input) or
      raise ArgumentError,
            "invalid value for :input option: #{inspect(input)} " <>
              "(expected iodata or an Enumerable of iodata)"

    {input, options}
  end

  # Checks every option of cmd/3 before anything runs (:cd, :env and :node are checked as
  # run/2's, also before the spawn).
  defp cmd_option!({:into, into}) do
    Collectable.impl_for(into) != nil or cmd_bad!(:into, into, "a Collectable")
  end

  defp cmd_option!({:input, input}) do
    input?(input) or cmd_bad!(:input, input, "iodata or an Enumerable of iodata")
  end

  defp cmd_option!({:timeout, timeout}) do
    timeout == :infinity or (is_integer(timeout) and timeout > 0 and timeout <= @max_timeout_ms) or
      cmd_bad!(:timeout, timeout, "positive milliseconds or :infinity")
  end

  defp cmd_option!({key, flag}) when key in [:stderr_to_stdout, :parallelism] do
    is_boolean(flag) or cmd_bad!(key, flag, "a boolean")
  end

  defp cmd_option!({:arg0, arg0}) do
    (is_binary(arg0) and arg0 != "") or cmd_bad!(:arg0, arg0, "a non-empty string")
  end

  defp cmd_option!({key, _}) when key in [:cd, :env, :node], do: true

  defp cmd_option!({key, _}) when is_atom(key),
    do: raise(ArgumentError, "unknown option #{inspect(key)} for Tether.cmd/3")

  defp cmd_option!(other),
    do: raise(ArgumentError, "invalid entry #{inspect(other)} in Tether.cmd/3 options")

  defp cmd_bad!(key, value, expected) do
    raise ArgumentError,
          "invalid value for #{inspect(key)} option of Tether.cmd/3: #{inspect(value)} " <>
            "(expected #{expected})"
  end

  # ── Daemon ───────────────────────────────────────────────────────────────────────────────

  @daemon_known [:cmd, :name, :run, :restart, :id, :log_level]

  # Every option of the daemon itself; those of `:run` are Tether.run/2's.
  defp daemon_options!(options) do
    (is_list(options) and Keyword.keyword?(options)) or
      raise ArgumentError,
            "Tether.Daemon options must be a keyword list, got: #{inspect(options)}"

    Keyword.has_key?(options, :cmd) or raise ArgumentError, "Tether.Daemon needs a :cmd option"

    Enum.each(options, fn
      {:run, run} when is_list(run) -> daemon_run_options!(run)
      {:restart, restart} when restart in [:permanent, :transient, :temporary] -> :ok
      {:log_level, level} when is_atom(level) -> log_level!(level)
      {key, _} when key in [:cmd, :name, :id] -> :ok
      {key, value} when key in @daemon_known -> daemon_bad!(key, value)
      {key, _} -> raise ArgumentError, "unknown option #{inspect(key)} for Tether.Daemon"
    end)
  end

  # The daemon lives by the :DOWN of its process: options that would withhold it (:sync
  # returns a result instead, `monitor: false`, a passive `:active` stream that the daemon
  # never activates, so that the :DOWN waits for output forever) are its own to set.
  defp daemon_run_options!(run) do
    proper_list?(run) or daemon_bad!(:run, run)

    Enum.each(run, fn option ->
      key = option_key(option)

      key not in [:sync, :monitor, :active] or
        raise ArgumentError, "option #{inspect(key)} in :run is set by Tether.Daemon"
    end)
  end

  defp log_level!(level) do
    level in [:emergency, :alert, :critical, :error, :warning, :warn, :notice, :info, :debug] or
      daemon_bad!(:log_level, level)
  end

  defp daemon_bad!(key, value) do
    raise ArgumentError,
          "invalid value for #{inspect(key)} option of Tether.Daemon: #{inspect(value)}"
  end

  # ── Run ──────────────────────────────────────────────────────────────────────────────────

  # The spec for `command` and `options`, as run by `caller` ("Tether.run/2 options" in the
  # messages: the options of a run, whichever function was called).
  defp build!(command, options, caller) when is_list(options) do
    proper_list?(options) or
      raise ArgumentError, "Tether.run/2 options must be a proper list, got: #{inspect(options)}"

    # The spec's defaults, and what several options decide together (resolved by finish!/1).
    acc =
      command
      |> argv!()
      |> Tether.Spec.new()
      |> Map.from_struct()
      |> Map.merge(%{
        kill_timeout_ms: Tether.Spec.kill_timeout_ms(),
        kill_command: nil,
        kill_sequence: nil,
        pty_echo: false,
        active: %{stdout: true, stderr: true}
      })

    options
    |> Enum.reduce(acc, &option!(&1, &2, caller))
    |> finish!()
  end

  defp build!(_command, options, _caller) do
    raise ArgumentError, "Tether.run/2 options must be a list, got: #{inspect(options)}"
  end

  # ── Commands ─────────────────────────────────────────────────────────────────────────────

  defp argv!(command) when is_binary(command) do
    argv!(["/bin/sh", "-c", command])
  end

  defp argv!([program | _] = argv) do
    proper_list?(argv) or
      raise ArgumentError, "command must be a proper list, got: #{inspect(argv)}"

    Enum.each(argv, fn arg ->
      is_binary(arg) or
        raise ArgumentError,
              "command arguments must be strings, got: #{inspect(arg)} in #{inspect(argv)}"

      c_string!(arg, "command argument")
    end)

    program != "" or raise ArgumentError, "the program name must not be empty"
    argv
  end

  defp argv!(command) do
    raise ArgumentError,
          "command must be a string (run by /bin/sh -c) or a non-empty list of strings, " <>
            "got: #{inspect(command)}"
  end

  # ── Options ──────────────────────────────────────────────────────────────────────────────

  @flags [
    monitor: {:monitor, :caller},
    stdin: {:stdin, :pipe},
    stdout: {:stdout, :caller},
    stderr: {:stderr, :caller},
    pty: {:pty, :default},
    pty_echo: {:pty_echo, true},
    kill_group: {:kill_group, true},
    detach: {:detach, true},
    link: {:link, true},
    sync: {:sync, true}
  ]

  defp option!(flag, spec, caller) when is_atom(flag) do
    case Keyword.fetch(@flags, flag) do
      {:ok, {key, value}} -> option!({key, value}, spec, caller)
      :error -> raise ArgumentError, "unknown option #{inspect(flag)} in Tether.run/2 options"
    end
  end

  defp option!({:monitor, :caller}, spec, caller), do: %{spec | monitor: caller}
  defp option!({:monitor, true}, spec, caller), do: %{spec | monitor: caller}
  defp option!({:monitor, false}, spec, _caller), do: %{spec | monitor: nil}

  defp option!({:stdin, value}, spec, _caller), do: %{spec | stdin: input!(value)}

  defp option!({stream, destination}, spec, caller) when stream in [:stdout, :stderr] do
    {native, handler} = output!(stream, destination, caller)

    handlers =
      if handler,
        do: Map.put(spec.handlers, stream, handler),
        else: Map.delete(spec.handlers, stream)

    %{spec | stream => native, handlers: handlers}
  end

  defp option!({:env, env}, spec, _caller), do: %{spec | env: env!(env)}
  defp option!({:cd, dir}, spec, _caller), do: %{spec | cd: path!(dir, :cd)}

  defp option!({:executable, path}, spec, _caller),
    do: %{spec | executable: path!(path, :executable)}

  defp option!({:kill_timeout, seconds}, spec, _caller) do
    %{spec | kill_timeout_ms: ms!(seconds, :kill_timeout, 1000)}
  end

  defp option!({:kill, command}, spec, _caller) when is_binary(command) and command != "" do
    %{spec | kill_command: c_string!(command, ":kill option")}
  end

  defp option!({:kill_sequence, [_ | _] = steps}, spec, _caller) do
    proper_list?(steps) or bad!(:kill_sequence, steps, "a list like [sigint: 2000, sigkill: 0]")

    steps =
      Enum.map(steps, fn
        {signal, wait} -> {:signal, signal!(signal, :kill_sequence), ms!(wait, :kill_sequence, 1)}
        other -> bad!(:kill_sequence, other, "{signal, milliseconds} entries")
      end)

    %{spec | kill_sequence: steps}
  end

  defp option!({:kill_group, flag}, spec, _caller) when is_boolean(flag),
    do: %{spec | kill_group: flag}

  defp option!({:group, 0}, spec, _caller), do: %{spec | group: :new}

  defp option!({:group, pgid}, spec, _caller)
       when is_integer(pgid) and pgid > 1 and pgid < 2_147_483_648,
       do: %{spec | group: pgid}

  defp option!({:group, :inherit}, spec, _caller), do: %{spec | group: :inherit}
  defp option!({:detach, flag}, spec, _caller) when is_boolean(flag), do: %{spec | detach: flag}

  defp option!({:background_jobs, what}, spec, _caller) when what in [:stop, :keep],
    do: %{spec | keep_background: what == :keep, background_owner: nil}

  defp option!({:background_jobs, {:keep, pid}} = option, spec, _caller) when is_pid(pid) do
    this_node?(pid) or
      bad!(:background_jobs, elem(option, 1), "{:keep, pid} with a pid of this node")

    %{spec | keep_background: true, background_owner: pid}
  end

  defp option!({:cgroup_limits, limits}, spec, _caller) when is_list(limits) do
    proper_list?(limits) or bad!(:cgroup_limits, limits, "a keyword list")
    %{spec | cgroup_limits: Enum.map(limits, &cgroup_limit!/1)}
  end

  defp option!({:pty, :default}, spec, _caller), do: %{spec | pty: spec.pty || {24, 80}}
  defp option!({:pty, true}, spec, caller), do: option!({:pty, :default}, spec, caller)
  defp option!({:pty, false}, spec, _caller), do: %{spec | pty: nil}

  defp option!({:winsz, {rows, cols}}, spec, _caller)
       when rows in 1..65_535 and cols in 1..65_535,
       do: %{spec | pty: {rows, cols}}

  defp option!({:pty_echo, flag}, spec, _caller) when is_boolean(flag),
    do: %{spec | pty_echo: flag}

  defp option!({:nice, n}, spec, _caller) when n in -20..19, do: %{spec | nice: n}

  defp option!({:user, user}, spec, _caller)
       when is_atom(user) and user not in [nil, true, false],
       do: option!({:user, Atom.to_string(user)}, spec, nil)

  defp option!({:user, user}, spec, _caller) when is_binary(user) or is_list(user) do
    user = chardata!(user, "invalid value for :user option")
    user != "" or bad!(:user, user, "a user name")
    %{spec | user: c_string!(user, ":user option")}
  end

  defp option!({:capabilities, :all}, spec, _caller), do: %{spec | capabilities: :all}

  defp option!({:capabilities, names}, spec, _caller) when is_list(names) do
    case capability_mask(names) do
      {:ok, mask} ->
        %{spec | capabilities: mask}

      :error ->
        bad!(:capabilities, names, ":all or a list of names like [:kill, :net_bind_service]")
    end
  end

  defp option!({:rlimit, limits}, spec, _caller) when is_list(limits) do
    proper_list?(limits) or bad!(:rlimit, limits, "a keyword list like [nofile: 1024]")
    %{spec | rlimits: spec.rlimits ++ Enum.map(limits, &rlimit!/1)}
  end

  defp option!({:idle_timeout, ms}, spec, _caller),
    do: %{spec | idle_timeout_ms: positive_ms!(ms, :idle_timeout)}

  defp option!({:max_output, bytes}, spec, _caller)
       when is_integer(bytes) and bytes > 0 and bytes < @u64_limit,
       do: %{spec | max_output: bytes}

  defp option!({:success_exit_code, code}, spec, _caller) when code in 0..255,
    do: %{spec | success_exit_code: code}

  defp option!({:active, [_ | _] = modes}, spec, _caller) do
    proper_list?(modes) or bad!(:active, modes, "[stdout: mode, stderr: mode]")

    Enum.reduce(modes, spec, fn
      {stream, mode}, spec when stream in [:stdout, :stderr] ->
        %{spec | active: Map.put(spec.active, stream, active!(mode))}

      other, _spec ->
        bad!(:active, other, "[stdout: mode, stderr: mode]")
    end)
  end

  defp option!({:active, mode}, spec, _caller) do
    mode = active!(mode)
    %{spec | active: %{stdout: mode, stderr: mode}}
  end

  defp option!({:link, flag}, spec, _caller) when is_boolean(flag), do: %{spec | link: flag}
  defp option!({:sync, flag}, spec, _caller) when is_boolean(flag), do: %{spec | sync: flag}

  defp option!({:timeout, :infinity}, spec, _caller), do: %{spec | timeout: :infinity}

  defp option!({:timeout, ms}, spec, _caller),
    do: %{spec | timeout: positive_ms!(ms, :timeout)}

  @known [:active, :monitor, :stdin, :env, :cd, :executable, :kill_timeout, :kill, :kill_sequence] ++
           [:kill_group, :group, :detach, :pty, :winsz, :pty_echo, :nice, :user, :rlimit] ++
           [:capabilities] ++
           [:idle_timeout, :max_output, :success_exit_code, :link, :sync, :timeout] ++
           [:background_jobs, :cgroup_limits]

  defp option!({key, value}, _spec, _caller) when key in @known do
    raise ArgumentError, "invalid value for #{inspect(key)} option: #{inspect(value)}"
  end

  defp option!({key, _value}, _spec, _caller) when is_atom(key) do
    raise ArgumentError, "unknown option #{inspect(key)} in Tether.run/2 options"
  end

  defp option!(other, _spec, _caller) do
    raise ArgumentError,
          "invalid entry #{inspect(other)} in Tether.run/2 options " <>
            "(expected an atom or a {key, value} tuple)"
  end

  # Resolves what depends on several options, and drops the intermediate keys.
  # A pid of this node's current incarnation: one of an earlier incarnation (same name, another
  # creation, e.g. from a term stored before a restart) has `node(pid) == node()` but is not
  # local, and the NIF could not monitor it. The creation is the external format's last 4 bytes.
  defp this_node?(pid) do
    node(pid) == node() and creation(pid) == creation(self())
  end

  defp creation(pid) do
    binary = :erlang.term_to_binary(pid)
    binary_part(binary, byte_size(binary) - 4, 4)
  end

  defp finish!(spec) do
    {spec.stdout, spec.stderr} != {:other, :other} or
      raise ArgumentError, "{:stdout, :stderr} and {:stderr, :stdout} cannot both be given"

    stop =
      cond do
        spec.kill_sequence -> spec.kill_sequence
        spec.kill_command -> Tether.Spec.stop(:command, spec.kill_command, spec.kill_timeout_ms)
        true -> Tether.Spec.stop(:signal, 15, spec.kill_timeout_ms)
      end

    pty = with {rows, cols} <- spec.pty, do: {rows, cols, spec.pty_echo}
    # A terminal needs its input side: with a pty, stdin is the terminal unless redirected.
    stdin = if pty && spec.stdin == :null, do: :pipe, else: spec.stdin

    # Output run by the Tether.Process (funs, :print) must precede the :DOWN, so the process
    # sends the :DOWN itself after handling every chunk.
    {monitor, down_to} =
      if spec.handlers == %{}, do: {spec.monitor, nil}, else: {nil, spec.monitor}

    # Handlers get backpressure: one chunk at a time, the Tether.Process asks for the next.
    credit = fn stream ->
      if Map.has_key?(spec.handlers, stream), do: 1, else: credit(spec.active[stream])
    end

    spec
    |> Map.drop([:__struct__, :kill_timeout_ms, :kill_command, :kill_sequence, :pty_echo, :active])
    |> Map.merge(%{stop: stop, pty: pty, stdin: stdin, monitor: monitor, down_to: down_to})
    |> Map.merge(%{stdout_credit: credit.(:stdout), stderr_credit: credit.(:stderr)})
    |> then(&struct!(Tether.Spec, &1))
  end

  # One cgroup v2 interface file and its value.
  defp cgroup_limit!({:memory_max, bytes}) when is_integer(bytes) and bytes > 0,
    do: {"memory.max", Integer.to_string(bytes)}

  defp cgroup_limit!({:pids_max, n}) when is_integer(n) and n > 0,
    do: {"pids.max", Integer.to_string(n)}

  defp cgroup_limit!({:cpu_max, {quota_us, period_us}})
       when is_integer(quota_us) and quota_us >= 1000 and is_integer(period_us) and
              period_us in 1000..1_000_000,
       do: {"cpu.max", "#{quota_us} #{period_us}"}

  defp cgroup_limit!(other) do
    bad!(
      :cgroup_limits,
      other,
      "memory_max: bytes, pids_max: count or cpu_max: {quota_us, period_us} entries"
    )
  end

  defp credit(true), do: nil
  defp credit(:once), do: 1
  defp credit(n), do: n

  @doc false
  # Validates an :active mode (also for Tether.activate/3).
  def active!(mode) when mode in [true, :once], do: mode
  def active!(n) when is_integer(n) and n >= 0 and n <= @max_timeout_ms, do: n
  def active!(other), do: bad!(:active, other, "true, :once or a count of messages")

  # ── Values ───────────────────────────────────────────────────────────────────────────────

  defp input!(:pipe), do: :pipe
  defp input!(true), do: :pipe
  defp input!(:null), do: :null
  defp input!(:close), do: :close
  defp input!(path) when is_binary(path) or is_list(path), do: {:file, path!(path, :stdin)}
  defp input!(other), do: bad!(:stdin, other, ":null, :close or a path")

  defp output!(_stream, :caller, caller), do: {{:pipe, caller}, nil}

  defp output!(_stream, pid, _caller) when is_pid(pid) and node(pid) == node(),
    do: {{:pipe, pid}, nil}

  defp output!(_stream, {:send, pid}, _caller) when is_pid(pid) and node(pid) == node(),
    do: {{:pipe, pid}, nil}

  defp output!(_stream, :null, _caller), do: {:null, nil}
  defp output!(_stream, :inherit, _caller), do: {:inherit, nil}
  defp output!(_stream, :close, _caller), do: {:close, nil}
  defp output!(:stdout, :stderr, _caller), do: {:other, nil}
  defp output!(:stderr, :stdout, _caller), do: {:other, nil}
  defp output!(_stream, :print, _caller), do: {{:pipe, :process}, &print/3}
  defp output!(_stream, fun, _caller) when is_function(fun, 3), do: {{:pipe, :process}, fun}

  defp output!(stream, path, _caller) when is_binary(path) and path != "",
    do: {{:file, path!(path, stream), false, 0o644}, nil}

  defp output!(stream, {path, file_options}, _caller)
       when is_binary(path) and is_list(file_options) do
    proper_list?(file_options) or
      bad!(stream, {path, file_options}, "{path, options} with a proper list of options")

    {append, mode} =
      Enum.reduce(file_options, {false, 0o644}, fn
        :append, {_, mode} -> {true, mode}
        {:append, flag}, {_, mode} when is_boolean(flag) -> {flag, mode}
        # No setuid, setgid or sticky bit: a file written by a child is never a program that
        # runs with its owner's rights.
        {:mode, mode}, {append, _} when mode in 0..0o777 -> {append, mode}
        {:mode, mode}, _ -> bad!(:mode, mode, "permission bits 0..0o777, no setuid/setgid/sticky")
        other, _ -> bad!(stream, other, "file options :append and {:mode, mode}")
      end)

    {{:file, path!(path, stream), append, mode}, nil}
  end

  defp output!(stream, other, _caller) do
    bad!(
      stream,
      other,
      "a local pid, {:send, pid}, a fun/3, a path, {path, options}, :null, :close, :print " <>
        "or the other stream"
    )
  end

  @doc false
  # The :print destination: each chunk to Logger, with the os_pid.
  def print(stream, os_pid, data) do
    Logger.info(["[", Integer.to_string(os_pid), ":", Atom.to_string(stream), "] ", data])
  end

  # Linux's capabilities in kernel order: CAP_CHOWN is 0, CAP_CHECKPOINT_RESTORE 40.
  @capabilities ~w(chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap
                   linux_immutable net_bind_service net_broadcast net_admin net_raw ipc_lock
                   ipc_owner sys_module sys_rawio sys_chroot sys_ptrace sys_pacct sys_admin
                   sys_boot sys_nice sys_resource sys_time sys_tty_config mknod lease
                   audit_write audit_control setfcap mac_override mac_admin syslog wake_alarm
                   block_suspend audit_read perfmon bpf checkpoint_restore)a
  @capability_bits for {cap, bit} <- Enum.with_index(@capabilities),
                       into: %{},
                       do: {Atom.to_string(cap), bit}

  @doc false
  # The mask (bit n: capability n) of a proper list of capability names, each an atom with or
  # without the `cap_` prefix (`:kill`, `:cap_kill`); :error for anything else.
  @spec capability_mask(term) :: {:ok, non_neg_integer} | :error
  def capability_mask(names) when is_list(names) do
    if proper_list?(names) do
      Enum.reduce_while(names, {:ok, 0}, fn name, {:ok, mask} ->
        case capability_bit(name) do
          {:ok, bit} -> {:cont, {:ok, Bitwise.bor(mask, Bitwise.bsl(1, bit))}}
          :error -> {:halt, :error}
        end
      end)
    else
      :error
    end
  end

  def capability_mask(_names), do: :error

  defp capability_bit(name) when is_atom(name) do
    Map.fetch(@capability_bits, name |> Atom.to_string() |> String.replace_prefix("cap_", ""))
  end

  defp capability_bit(_name), do: :error

  @doc false
  # The capability names of a mask, in kernel order.
  @spec capability_names(non_neg_integer) :: [atom]
  def capability_names(mask) do
    for {cap, bit} <- Enum.with_index(@capabilities),
        Bitwise.band(mask, Bitwise.bsl(1, bit)) != 0,
        do: cap
  end

  defp rlimit!({name, value}) when is_atom(name) do
    name = Atom.to_string(name)

    Tether.Native.rlimit_known(name) or
      bad!(:rlimit, name, "a limit like :nofile, :as, :cpu or :core")

    {soft, hard} =
      case value do
        {soft, hard} -> {limit!(soft), limit!(hard)}
        value -> {limit!(value), limit!(value)}
      end

    soft <= hard or bad!(:rlimit, value, "a soft limit at most the hard one")
    {name, soft, hard}
  end

  defp rlimit!(other), do: bad!(:rlimit, other, "{name, limit} entries")

  defp limit!(:infinity), do: @rlim_infinity
  defp limit!(n) when is_integer(n) and n >= 0 and n < @rlim_infinity, do: n
  defp limit!(other), do: bad!(:rlimit, other, "a non-negative integer or :infinity")

  defp signal!(signal, key) do
    Tether.Signal.number!(signal)
  rescue
    ArgumentError -> bad!(key, signal, "signal names or numbers")
  end

  defp env!(env) when (is_list(env) and env != []) or is_map(env) do
    is_map(env) or proper_list?(env) or bad!(:env, env, "a list")

    Enum.map(env, fn
      :clear ->
        :clear

      {name, value} ->
        name = env_string!(name, "name")

        (name != "" and not String.contains?(name, "=")) or
          raise ArgumentError, "invalid name in :env option: #{inspect(name)}"

        case value do
          v when v in [false, nil] -> {name, nil}
          # `true` reads as "set" but has no value: refused rather than set to "true".
          true -> bad!(:env, {name, true}, "a string value, or false/nil to unset")
          v -> {name, env_string!(v, "value")}
        end

      other ->
        bad!(:env, other, "{name, value}, {name, false} or :clear entries")
    end)
  end

  defp env!([]), do: []
  defp env!(other), do: bad!(:env, other, "a list")

  defp env_string!(value, what) when is_binary(value), do: c_string!(value, "#{what} in :env")
  defp env_string!(value, what) when is_atom(value), do: env_string!(Atom.to_string(value), what)

  defp env_string!(value, what) when is_list(value) do
    value |> chardata!("invalid #{what} in :env option") |> env_string!(what)
  end

  defp env_string!(value, what) do
    raise ArgumentError, "invalid #{what} in :env option: #{inspect(value)} (expected a string)"
  end

  defp path!(path, key) when is_binary(path) and path != "",
    do: c_string!(path, "#{inspect(key)} option")

  defp path!(path, key) when is_list(path) and path != [] do
    path |> chardata!("invalid value for #{inspect(key)} option") |> path!(key)
  end

  defp path!(path, key), do: bad!(key, path, "a non-empty path")

  defp ms!(value, _key, unit)
       when is_number(value) and value >= 0 and value * unit <= @max_timeout_ms,
       do: round(value * unit)

  defp ms!(value, key, unit) do
    what = if unit == 1000, do: "seconds", else: "milliseconds"
    bad!(key, value, "non-negative #{what}, at most #{div(@max_timeout_ms, unit)}")
  end

  defp positive_ms!(value, _key)
       when is_integer(value) and value > 0 and value <= @max_timeout_ms,
       do: value

  defp positive_ms!(value, key), do: bad!(key, value, "positive milliseconds")

  defp bad!(key, value, expected) do
    raise ArgumentError,
          "invalid value for #{inspect(key)} option: #{inspect(value)} (expected #{expected})"
  end

  @doc false
  # Whether `term` is a proper list (for the other modules that check arguments too).
  @spec proper_list?(term) :: boolean
  def proper_list?([]), do: true
  def proper_list?([_ | tail]), do: proper_list?(tail)
  def proper_list?(_), do: false

  @doc false
  # Whether `input` can be written to stdin (`:input` of cmd/3 and stream/2): nil, iodata, or
  # an Enumerable of iodata. Functions are Enumerables only with arity 2 (Stream's).
  @spec input?(term) :: boolean
  def input?(input) do
    cond do
      is_nil(input) or is_binary(input) -> true
      is_list(input) -> iodata?(input)
      is_function(input) -> is_function(input, 2)
      true -> Enumerable.impl_for(input) != nil
    end
  end

  @doc false
  # Whether `data` is iodata.
  @spec iodata?(term) :: boolean
  def iodata?(data) do
    _ = IO.iodata_length(data)
    true
  rescue
    ArgumentError -> false
  end

  defp chardata!(chardata, message) do
    IO.chardata_to_string(chardata)
  rescue
    _ in [ArgumentError, UnicodeConversionError] ->
      reraise ArgumentError, [message: "#{message}: #{inspect(chardata)}"], __STACKTRACE__
  end

  defp c_string!(value, what) do
    String.contains?(value, <<0>>) and
      raise ArgumentError, "#{what} contains a NUL byte: #{inspect(value)}"

    value
  end
end
