"""The simulated clinic behind bundle/demo/pacs_export.py: study images, readers' marks, GSPS/SR/KO objects, incidents.

One module per concern: config (knobs and names), study (a patient's MR images), patient (one
patient's export state and the status a correct miner must give each mark), readers (where and
how a reader measures), gsps and sr (the annotation objects), incidents (what a real export also
contains). Nothing outside bundle/demo imports it.
"""
