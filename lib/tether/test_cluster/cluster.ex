defmodule Tether.TestCluster.Cluster do
  @moduledoc false
  # The manager's state: its config, its nodes (`Tether.TestCluster.Node`, by name, and their
  # order), who waits for what, and the tasks it runs. Each task (`Task.async/1`) is known by
  # its ref in `tasks`, with what its reply is for; the manager never waits for one.

  alias Tether.TestCluster.Node

  @type task :: {:boot_check, node, Tether.os_pid()} | :health | :stop

  defstruct config: nil,
            nodes: %{},
            order: [],
            by_os_pid: %{},
            subscribers: MapSet.new(),
            starting: nil,
            stop_waiters: [],
            tasks: %{},
            health_waiters: [],
            health_timer: false

  @type t :: %__MODULE__{
          config: Tether.TestCluster.Config.t() | nil,
          nodes: %{optional(node) => Node.t()},
          order: [node],
          by_os_pid: %{optional({node, Tether.os_pid()}) => node},
          subscribers: MapSet.t(pid),
          starting: GenServer.from() | nil,
          stop_waiters: [Tether.TestCluster.Stopping.entry()],
          tasks: %{optional(reference) => task},
          health_waiters: [GenServer.from()],
          health_timer: boolean
        }

  @doc "Replaces node `name`."
  @spec put_node(t, node, Node.t()) :: t
  def put_node(state, name, node), do: %{state | nodes: Map.put(state.nodes, name, node)}

  @doc "Applies `fun` to node `name`."
  @spec update_node(t, node, (Node.t() -> Node.t())) :: t
  def update_node(state, name, fun), do: put_node(state, name, fun.(state.nodes[name]))

  @doc "Sets the status of node `name`."
  @spec set_status(t, node, Node.status()) :: t
  def set_status(state, name, status), do: update_node(state, name, &Node.status(&1, status))

  @doc "The nodes' info, in node order."
  @spec node_list(t) :: [{node, Tether.TestCluster.Manager.info()}]
  def node_list(state), do: for(name <- state.order, do: {name, Node.info(state.nodes[name])})

  @doc "The nodes' info and health, in node order."
  @spec statuses(t) :: [{node, Tether.TestCluster.Manager.node_status()}]
  def statuses(state),
    do: for(name <- state.order, do: {name, Node.status_info(state.nodes[name])})

  @doc "Sends `message` to every subscriber."
  @spec notify(t, term) :: :ok
  def notify(state, message), do: Enum.each(state.subscribers, &send(&1, message))

  @doc "Runs `fun` in a task whose reply is for `purpose`."
  @spec start_task(t, task, (() -> term)) :: {t, reference}
  def start_task(state, purpose, fun) do
    %Task{ref: ref} = Task.async(fun)
    {%{state | tasks: Map.put(state.tasks, ref, purpose)}, ref}
  end

  @doc "Whether a task for `purpose` is out."
  @spec task_running?(t, task) :: boolean
  def task_running?(state, purpose), do: purpose in Map.values(state.tasks)
end
