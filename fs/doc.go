// Package fs translates FUSE requests into calls on a tiering.Store and
// back. It holds no state of its own beyond each node's last known name
// (parent and name, updated under the Store's namespace lock by the commit
// callbacks of Rename and Unlink) and never touches a backing file itself.
//
// No read returns fuse.ReadResultFd: the backing of an open file can be
// swapped by a move at any time. Kernel passthrough ([mount] passthrough,
// passthrough.go) is given only to files tiering keeps from moving while
// a passthrough handle is open.
package fs
