defmodule Tether.TermGenerator do
  @moduledoc """
  A hand-written generator of random Erlang terms for fuzzing (no hex dependencies): wrong
  types, huge and empty values, NUL bytes, bad pids, dead and live os_pids, option-shaped
  tuples. Seeded through `:rand`, so a failing seed replays.
  """

  @atoms [
    :ok,
    :error,
    nil,
    true,
    false,
    :monitor,
    :stdout,
    :stderr,
    :stdin,
    :sigterm,
    :sigkill,
    :sigfoo,
    :detach,
    :kill_timeout,
    :env,
    :cd,
    :clear,
    :null,
    :send,
    :group,
    :executable,
    :kill_group,
    :link,
    :term,
    :"",
    :"with space",
    :"Elixir.Tether"
  ]
  # Every option of Tether.run/2 (and a bogus one). :kill and :executable are neutralised by
  # safe_options/1; :user only ever names users that do not exist (or root).
  @option_keys [
    :monitor,
    :stdout,
    :stderr,
    :stdin,
    :env,
    :cd,
    :kill_timeout,
    :kill,
    :kill_sequence,
    :kill_group,
    :executable,
    :group,
    :detach,
    :link,
    :active,
    :pty,
    :winsz,
    :pty_echo,
    :nice,
    :rlimit,
    :idle_timeout,
    :max_output,
    :success_exit_code,
    :sync,
    :timeout,
    :node,
    :user,
    :capabilities,
    :bogus
  ]
  @manage_keys [
    :monitor,
    :link,
    :kill_timeout,
    :kill,
    :kill_sequence,
    :kill_group,
    :detach,
    :success_exit_code,
    :stdout
  ]
  @cmd_keys [:into, :input, :timeout, :stderr_to_stdout, :arg0, :parallelism, :cd, :env, :node] ++
              [:bogus]

  @doc "A random term; `context` supplies live/dead os_pids and pids."
  def term(context, depth \\ 2) do
    case :rand.uniform(if depth > 0, do: 14, else: 10) do
      1 -> Enum.random(@atoms)
      2 -> integer(context)
      3 -> Enum.random([0.0, -1.5, 1.0e300, 3.14])
      4 -> binary()
      5 -> Enum.random([~c"", ~c"true", [0, 255, 1_114_112], ~c"sig\0term", [-1]])
      6 -> Enum.random([self(), context.dead_pid, context.live_pid])
      7 -> Enum.random([make_ref(), fn -> :ok end, fn _, _, _ -> :ok end])
      8 -> Enum.random([[], {}, %{}, <<>>])
      9 -> integer(context)
      10 -> Enum.random(context.os_pids)
      11 -> Enum.map(1..:rand.uniform(4), fn _ -> term(context, depth - 1) end)
      12 -> List.to_tuple(Enum.map(1..:rand.uniform(4), fn _ -> term(context, depth - 1) end))
      13 -> %{term(context, 0) => term(context, depth - 1)}
      14 -> [term(context, depth - 1) | term(context, 0)]
    end
  end

  @doc "A random integer: small, negative, huge, or near the os_pid range."
  def integer(context) do
    Enum.random([
      0,
      -1,
      :rand.uniform(100),
      :rand.uniform(40_000),
      2 ** 31,
      2 ** 64,
      -(2 ** 70),
      Enum.random(context.os_pids)
    ])
  end

  @doc "A random binary: empty, random bytes, with NUL, or large."
  def binary do
    case :rand.uniform(6) do
      1 -> ""
      2 -> :rand.bytes(:rand.uniform(32))
      3 -> "a\0b"
      4 -> "/nonexistent/" <> Base.encode16(:rand.bytes(4))
      5 -> String.duplicate("x", 70_000)
      6 -> "VALUE"
    end
  end

  @doc "A random options list: mostly option-shaped, sometimes garbage."
  def options(context, keys \\ @option_keys) do
    case :rand.uniform(10) do
      1 ->
        term(context)

      2 ->
        # An improper list of options.
        [{Enum.random(keys), term(context, 0)} | term(context, 0)]

      _ ->
        for _ <- 0..:rand.uniform(4) do
          key = Enum.random(keys)
          if :rand.uniform(3) == 1, do: key, else: {key, option_value(key, context)}
        end
    end
  end

  @doc "Options that are mostly of the right shape: more of them get as far as a spawn."
  def plausible_options(context, keys \\ @option_keys) do
    for _ <- 0..:rand.uniform(3), do: (key = Enum.random(keys)) && {key, plausible(key, context)}
  end

  @doc "Options of `Tether.manage/2`."
  def manage_options(context) do
    if :rand.uniform(2) == 1,
      do: options(context, @manage_keys),
      else: plausible_options(context, @manage_keys)
  end

  @doc "Options of `Tether.cmd/3` (a keyword list mostly)."
  def cmd_options(context) do
    if :rand.uniform(2) == 1,
      do: options(context, @cmd_keys),
      else: plausible_options(context, @cmd_keys)
  end

  # Mostly a random term; sometimes a value of the right shape, so that deeper checks run.
  defp option_value(key, context) do
    if :rand.uniform(3) == 1, do: term(context, 1), else: plausible(key, context)
  end

  defp plausible(key, context) do
    case key do
      k when k in [:stdout, :stderr] ->
        Enum.random([:null, :close, "out.txt", {"out.txt", [:append, {:mode, mode()}]}, self()])

      :active ->
        Enum.random([true, :once, 0, 3, [stdout: :once], [{:stdout, true} | :x]])

      :env ->
        Enum.random([[{"A", "1"}], [{"A", true}], [:clear], [{"A", nil} | :x], %{"B" => "2"}])

      k when k in [:timeout, :idle_timeout, :kill_timeout, :max_output] ->
        Enum.random([-1, 0, 1, 50, 1.5, 2 ** 70, :infinity])

      :group ->
        Enum.random([0, :inherit | Enum.take(context.os_pids, 6)])

      :kill_sequence ->
        Enum.random([[sigterm: 10], [{:sigkill, -1}], [{:sigint, 1} | :x]])

      :winsz ->
        Enum.random([{24, 80}, {0, 1}, {70_000, 1}])

      :rlimit ->
        Enum.random([[nofile: 64], [core: {0, 0}], [as: :infinity], [bogus: 1]])

      :input ->
        Enum.random(["x", ["a", ?b], [1000], 1..3, Stream.map(1..2, &to_string/1), 5])

      :into ->
        Enum.random(["", [], %{}, 5, MapSet.new()])

      :user ->
        Enum.random(["no-such-user-tether", :"no-such-user-tether", "", 5])

      :capabilities ->
        Enum.random([:all, [], [:kill, :cap_chown], [:no_such_cap], [:kill | :x], :kill])

      k when k in [:monitor, :detach, :kill_group, :link, :pty, :pty_echo, :sync] ->
        Enum.random([true, false, :maybe])

      k when k in [:stderr_to_stdout, :parallelism] ->
        Enum.random([true, false, :maybe])

      :stdin ->
        Enum.random([:pipe, :null, :close, "/nonexistent/in", 5])

      :cd ->
        Enum.random(["/", "/nonexistent", "", 5])

      :nice ->
        Enum.random([0, 19, -21, 1.5])

      :success_exit_code ->
        Enum.random([0, 1, 256])

      :kill ->
        Enum.random(["true", "", 5])

      :arg0 ->
        Enum.random(["name", "", 5])

      :node ->
        Enum.random([node(), :nowhere@nohost, nil, self()])

      _ ->
        term(context, 1)
    end
  end

  defp mode, do: Enum.random([0o600, 0o644, 0o4755, 0o1777, 0o10000, -1])

  @doc """
  A random command. Whatever its shape, a command that could run runs `true` (or the shell
  `true`): the fuzzer must never execute a random program.
  """
  def command(context) do
    case term(context) do
      [program | args] when is_binary(program) -> ["true" | args]
      string when is_binary(string) -> "true"
      other -> Enum.random([other, ["true"], "true", ["true", binary()]])
    end
  end

  @doc """
  A program for `Tether.cmd/3`: `true`, a path that does not exist, or a term that is not a
  program name. Never a random name that could be found on `PATH`.
  """
  def program(context) do
    case term(context, 0) do
      binary when is_binary(binary) -> Enum.random(["true", "/bin/true", "/nonexistent/x", ""])
      other -> other
    end
  end

  @doc "Neutralises options that could run a random program."
  def safe_options([{:executable, _} | rest]),
    do: [{:executable, "/bin/true"} | safe_options(rest)]

  def safe_options([{:kill, command} | rest]) when is_binary(command),
    do: [{:kill, "true"} | safe_options(rest)]

  def safe_options([other | rest]), do: [other | safe_options(rest)]
  def safe_options(options), do: options
end
