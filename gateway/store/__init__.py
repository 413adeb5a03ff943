"""Where state is kept: one backend per engine, each implementing the domain packages'
store contracts."""
