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
  @option_keys [
    :monitor,
    :stdout,
    :stderr,
    :env,
    :cd,
    :kill_timeout,
    :kill_group,
    :executable,
    :group,
    :detach,
    :link,
    :bogus
  ]

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
  def options(context) do
    if :rand.uniform(8) == 1 do
      term(context)
    else
      for _ <- 0..:rand.uniform(4) do
        key = Enum.random(@option_keys)
        if :rand.uniform(3) == 1, do: key, else: {key, term(context, 1)}
      end
    end
  end

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

  @doc "Neutralises options that could run a random program."
  def safe_options([{:executable, _} | rest]),
    do: [{:executable, "/bin/true"} | safe_options(rest)]

  def safe_options([other | rest]), do: [other | safe_options(rest)]
  def safe_options(options), do: options
end
