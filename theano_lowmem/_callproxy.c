/* The short path of a call whose signature has a cached plan (theano_lowmem.callplan).
 *
 * ``Proxy`` is the C base class of ``callplan.PlannedVM``.  Its ``tp_call`` does what
 * ``PlannedVM._short_call`` does in Python, without a Python frame: when a short path
 * is set (``_set_short``) and the call has no argument, it reads the shapes of the
 * input cells (or calls the signature reader), compares them with the plan's
 * signature, checks (gc off, arena) that the arena's first view is still in its
 * cell, adds one to ``plan.calls`` and calls the plan's VM.  Anything else (no short
 * path, another signature, an argument such as ``output_subset``, an unreadable
 * shape) calls the instance's ``_long_call`` with the same arguments.
 *
 * Built by setup.py as an optional extension; without it, PlannedVM runs the same
 * logic in Python (and says so once, see callplan.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *vm;      /* callable run on a match, or NULL: no short path */
    PyObject *cells;   /* tuple of input cells (lists) whose [0].shape is compared, or NULL */
    PyObject *reader;  /* when cells is NULL: callable returning the signature */
    PyObject *sig;     /* tuple of shapes (one per cell), or the reader's expected value */
    PyObject *cell;    /* gc off, arena: the first view's cell, or NULL */
    PyObject *view;    /* ... and the view it must hold */
    PyObject *plan;    /* its ``calls`` attribute counts the short calls, or NULL */
} Proxy;

static PyObject *s_shape, *s_calls, *s_long_call, *one;

static int
proxy_traverse(Proxy *self, visitproc visit, void *arg)
{
    Py_VISIT(self->vm);
    Py_VISIT(self->cells);
    Py_VISIT(self->reader);
    Py_VISIT(self->sig);
    Py_VISIT(self->cell);
    Py_VISIT(self->view);
    Py_VISIT(self->plan);
    return 0;
}

static int
proxy_clear(Proxy *self)
{
    Py_CLEAR(self->vm);
    Py_CLEAR(self->cells);
    Py_CLEAR(self->reader);
    Py_CLEAR(self->sig);
    Py_CLEAR(self->cell);
    Py_CLEAR(self->view);
    Py_CLEAR(self->plan);
    return 0;
}

static void
proxy_dealloc(Proxy *self)
{
    PyObject_GC_UnTrack(self);
    proxy_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* 1 if the short path applies to this call, 0 if not (never an exception). */
static int
proxy_matches(Proxy *self)
{
    if (self->cells != NULL) {
        Py_ssize_t n = PyTuple_GET_SIZE(self->cells);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *cell = PyTuple_GET_ITEM(self->cells, i);
            if (!PyList_Check(cell) || PyList_GET_SIZE(cell) < 1)
                return 0;
            PyObject *shape = PyObject_GetAttr(PyList_GET_ITEM(cell, 0), s_shape);
            if (shape == NULL) {
                PyErr_Clear();
                return 0;
            }
            int eq = PyObject_RichCompareBool(shape, PyTuple_GET_ITEM(self->sig, i), Py_EQ);
            Py_DECREF(shape);
            if (eq != 1) {
                if (eq < 0)
                    PyErr_Clear();
                return 0;
            }
        }
    }
    else {
        PyObject *got = PyObject_CallNoArgs(self->reader);
        if (got == NULL) {
            PyErr_Clear();
            return 0;
        }
        int eq = PyObject_RichCompareBool(got, self->sig, Py_EQ);
        Py_DECREF(got);
        if (eq != 1) {
            if (eq < 0)
                PyErr_Clear();
            return 0;
        }
    }
    if (self->cell != NULL) {
        if (!PyList_Check(self->cell) || PyList_GET_SIZE(self->cell) < 1 ||
                PyList_GET_ITEM(self->cell, 0) != self->view)
            return 0;
    }
    return 1;
}

static PyObject *
proxy_call(Proxy *self, PyObject *args, PyObject *kwds)
{
    if (self->vm != NULL && PyTuple_GET_SIZE(args) == 0 &&
            (kwds == NULL || PyDict_GET_SIZE(kwds) == 0) && proxy_matches(self)) {
        PyObject *vm = self->vm, *plan = self->plan;
        Py_INCREF(vm);
        if (plan != NULL) {                 /* plan.calls += 1 */
            Py_INCREF(plan);
            PyObject *calls = PyObject_GetAttr(plan, s_calls);
            PyObject *more = calls == NULL ? NULL : PyNumber_Add(calls, one);
            Py_XDECREF(calls);
            int bad = more == NULL || PyObject_SetAttr(plan, s_calls, more) < 0;
            Py_XDECREF(more);
            Py_DECREF(plan);
            if (bad) {
                Py_DECREF(vm);
                return NULL;
            }
        }
        PyObject *out = PyObject_CallNoArgs(vm);
        Py_DECREF(vm);
        return out;
    }
    PyObject *meth = PyObject_GetAttr((PyObject *)self, s_long_call);
    if (meth == NULL)
        return NULL;
    PyObject *out = PyObject_Call(meth, args, kwds);
    Py_DECREF(meth);
    return out;
}

static PyObject *
none_to_null(PyObject *o)
{
    if (o == Py_None)
        return NULL;
    Py_INCREF(o);
    return o;
}

static PyObject *
proxy_set_short(Proxy *self, PyObject *args)
{
    PyObject *vm, *cells, *reader, *sig, *cell, *view, *plan;
    if (!PyArg_ParseTuple(args, "OOOOOOO:_set_short", &vm, &cells, &reader, &sig, &cell,
                          &view, &plan))
        return NULL;
    if (vm == Py_None || !PyCallable_Check(vm)) {
        PyErr_SetString(PyExc_TypeError, "_set_short: vm must be callable");
        return NULL;
    }
    if (cells != Py_None) {
        if (!PyTuple_Check(cells) || !PyTuple_Check(sig) ||
                PyTuple_GET_SIZE(cells) != PyTuple_GET_SIZE(sig)) {
            PyErr_SetString(PyExc_TypeError,
                            "_set_short: cells and sig must be tuples of the same length");
            return NULL;
        }
    }
    else if (reader == Py_None || !PyCallable_Check(reader)) {
        PyErr_SetString(PyExc_TypeError, "_set_short: a reader is needed without cells");
        return NULL;
    }
    proxy_clear(self);
    self->vm = none_to_null(vm);
    self->cells = none_to_null(cells);
    self->reader = none_to_null(reader);
    self->sig = none_to_null(sig);
    self->cell = none_to_null(cell);
    self->view = none_to_null(view);
    self->plan = none_to_null(plan);
    Py_RETURN_NONE;
}

static PyObject *
proxy_drop_short(Proxy *self, PyObject *Py_UNUSED(ignored))
{
    proxy_clear(self);
    Py_RETURN_NONE;
}

static PyObject *
proxy_get_short(Proxy *self, void *Py_UNUSED(closure))
{
    if (self->vm == NULL)
        Py_RETURN_NONE;
    PyObject *items[7] = {self->vm, self->cells, self->reader, self->sig, self->cell,
                          self->view, self->plan};
    PyObject *t = PyTuple_New(7);
    if (t == NULL)
        return NULL;
    for (int i = 0; i < 7; i++) {
        PyObject *o = items[i] != NULL ? items[i] : Py_None;
        Py_INCREF(o);
        PyTuple_SET_ITEM(t, i, o);
    }
    return t;
}

static PyMethodDef proxy_methods[] = {
    {"_set_short", (PyCFunction)proxy_set_short, METH_VARARGS,
     "_set_short(vm, cells, reader, sig, cell, view, plan): set the short path "
     "(None for what does not apply)."},
    {"_drop_short", (PyCFunction)proxy_drop_short, METH_NOARGS, "Drop the short path."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef proxy_getset[] = {
    {"_short", (getter)proxy_get_short, NULL,
     "(vm, cells, reader, sig, cell, view, plan) of the short path, or None.", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyTypeObject ProxyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "theano_lowmem._callproxy.Proxy",
    .tp_basicsize = sizeof(Proxy),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "C base of callplan.PlannedVM: the short path of a cached signature.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)proxy_dealloc,
    .tp_traverse = (traverseproc)proxy_traverse,
    .tp_clear = (inquiry)proxy_clear,
    .tp_call = (ternaryfunc)proxy_call,
    .tp_methods = proxy_methods,
    .tp_getset = proxy_getset,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_callproxy",
    "The short path of a cached signature's call (see callplan.PlannedVM).", -1, NULL
};

PyMODINIT_FUNC
PyInit__callproxy(void)
{
    s_shape = PyUnicode_InternFromString("shape");
    s_calls = PyUnicode_InternFromString("calls");
    s_long_call = PyUnicode_InternFromString("_long_call");
    one = PyLong_FromLong(1);
    if (s_shape == NULL || s_calls == NULL || s_long_call == NULL || one == NULL)
        return NULL;
    if (PyType_Ready(&ProxyType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ProxyType);
    if (PyModule_AddObject(m, "Proxy", (PyObject *)&ProxyType) < 0) {
        Py_DECREF(&ProxyType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
