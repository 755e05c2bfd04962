defmodule Tether.Exec.Group do
  @moduledoc false
  # Process groups as erlexec's port program addresses them: SIGTERM to a `kill_group` child's
  # group when its leader exits, and to every child's group when the `exec` server goes.
  #
  # Tether signals a child's group only while the child lives (`kill_group: true`); here the
  # leader may be gone, so the signal goes through `kill(1)` as a Tether child. A group number
  # stays allocated while any member lives, so it cannot name another group until the last
  # member is gone. The VM's own group, and groups 0 and 1, are never signalled.

  @doc false
  # Sends `signal` to each group in `pgids` (ignoring groups already empty).
  @spec signal([integer], atom) :: :ok
  def signal(pgids, signal) do
    case Enum.filter(pgids, &signallable?/1) do
      [] ->
        :ok

      pgids ->
        name = signal |> Atom.to_string() |> String.trim_leading("sig") |> String.upcase()
        args = ["-s", name, "--" | Enum.map(pgids, &"-#{&1}")]

        try do
          Tether.run([kill_program() | args], [:sync])
        rescue
          # The application is stopping: nothing left to start the signaller with.
          _ -> :ok
        catch
          :exit, _ -> :ok
        end

        :ok
    end
  end

  @doc false
  # The live (not zombie) processes of the groups in `pgids`, read from /proc.
  @spec members([integer]) :: [pos_integer]
  def members(pgids) do
    wanted = MapSet.new(pgids, &Integer.to_string/1)

    for entry <- ls_proc(),
        {pid, ""} <- [Integer.parse(entry)],
        {:ok, stat} <- [File.read("/proc/#{entry}/stat")],
        [_, rest] <- [:binary.split(stat, ") ", [:trim_all])],
        [state, _ppid, group | _] <- [String.split(rest, " ", parts: 4)],
        state not in ["Z", "X"],
        MapSet.member?(wanted, group),
        do: pid
  end

  @doc false
  # Waits until the groups in `pgids` have no live member, up to `timeout` ms; returns the
  # groups that still have one.
  @spec await_empty([integer], non_neg_integer) :: [integer]
  def await_empty(pgids, timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout
    do_await_empty(pgids, deadline)
  end

  defp do_await_empty([], _deadline), do: []

  defp do_await_empty(pgids, deadline) do
    alive = members(pgids) |> MapSet.new(&pgid_of/1) |> MapSet.to_list()
    pgids = Enum.filter(pgids, &(&1 in alive))

    cond do
      pgids == [] ->
        []

      System.monotonic_time(:millisecond) >= deadline ->
        pgids

      true ->
        # Polling /proc: there is no event for "the last member of a group is gone".
        Process.sleep(5)
        do_await_empty(pgids, deadline)
    end
  end

  defp pgid_of(pid) do
    with {:ok, stat} <- File.read("/proc/#{pid}/stat"),
         [_, rest] <- :binary.split(stat, ") "),
         [_state, _ppid, group | _] <- String.split(rest, " ", parts: 4),
         {pgid, ""} <- Integer.parse(group) do
      pgid
    else
      _ -> nil
    end
  end

  defp ls_proc do
    case File.ls("/proc") do
      {:ok, entries} -> entries
      {:error, _} -> []
    end
  end

  defp signallable?(pgid), do: is_integer(pgid) and pgid > 1 and pgid != own_group()

  defp own_group do
    case :persistent_term.get({__MODULE__, :own_group}, nil) do
      nil ->
        pgid = pgid_of(List.to_integer(:os.getpid())) || 0
        :persistent_term.put({__MODULE__, :own_group}, pgid)
        pgid

      pgid ->
        pgid
    end
  end

  defp kill_program do
    System.find_executable("kill") || "/bin/kill"
  end
end
