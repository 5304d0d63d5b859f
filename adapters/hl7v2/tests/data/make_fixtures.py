#!/usr/bin/env python3
"""Writes the HL7 v2 fixtures beside this script. Run it from anywhere: python3 make_fixtures.py

Every patient, clinician and practice is invented. NHS numbers come from the never-issued
999 range with valid Modulus 11 check digits, except where the defect is the check digit.
Fields are listed by position so that each one's HL7 number can be read off the script.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def segment(name, fields):
    """fields: {position: text}; MSH positions count MSH-1 as the field separator."""
    top = max(fields) if fields else 0
    if name == "MSH":
        values = [fields.get(i, "") for i in range(3, top + 1)]
        return "MSH|^~\\&|" + "|".join(values)
    values = [fields.get(i, "") for i in range(1, top + 1)]
    return "|".join([name] + values)


def write(name, segments, terminator):
    text = terminator.join(segments) + terminator
    with open(os.path.join(HERE, name), "w", newline="") as f:
        f.write(text)
    return text


# EMIS-like sender: \r terminators, SFT, PRD-10 names the practice, PID-32 says the NHS number
# is verified. Maps to the same referral as fixtures/gp-system/referral-new.json.
emis = [
    segment("MSH", {3: "EMIS", 4: "A81001", 5: "SIGNPOST", 6: "SIGNPOST", 7: "20261120093000",
                    9: "REF^I12^REF_I12", 10: "EMIS-000123", 11: "P", 12: "2.5", 15: "AL", 16: "NE",
                    17: "GBR", 18: "UNICODE UTF-8"}),
    segment("SFT", {1: "Example GP clinical system", 2: "4.2", 3: "ExampleGP", 4: "4.2.1877"}),
    segment("EVN", {1: "I12", 2: "20261120093000"}),
    segment("RF1", {1: "P^Pending^HL70283", 3: "SP^Social prescribing^L", 6: "REF-0a0001",
                    7: "20261120092500", 8: "20261204"}),
    segment("PRD", {1: "RP^Referring Provider^HL70286", 2: "Okafor^Ada^^^Dr^^L",
                    3: "1 Surgery Road^^Exampleton^^ZZ99 3AA", 7: "555086689106^SDS~G9999991^GMC",
                    10: "Riverside Medical Practice^^A81001^^^^^^^A81001"}),
    segment("PRD", {1: "RT^Referred to Provider^HL70286", 2: "Social prescribing service"}),
    segment("PID", {1: "1", 3: "9990000018^^^NHS^NH~E100234^^^EMIS^PI", 5: "Example^Joan^^^^^L",
                    7: "19480314", 8: "F", 11: "1 Example Street^^Exampleton^^ZZ99 3AA^^H",
                    13: "^PRN^PH^^^01632^960001", 32: "01"}),
    segment("PV1", {1: "1", 2: "O"}),
    segment("NTE", {1: "1", 2: "P", 3: "Social isolation since bereavement; worried about money"}),
]
write("ref-i12-emis.hl7", emis, "\r")

# SystmOne-like sender: \n terminators, MSH-4 is the practice, no SFT or PID-32, PID-3 repeats
# (local id first; the NHS number found by its assigning authority NHS alone), escape sequences
# in the notes (\T\ \S\ \F\ \E\ \.br\ and a hex-escaped pound sign), and extra segments (DG1,
# OBR, NTE after OBR, ZXX). Times without an offset in July: BST.
systmone = [
    segment("MSH", {3: "SystmOne", 4: "A81002", 5: "SIGNPOST", 6: "SIGNPOST", 7: "20260702101500",
                    9: "REF^I12", 10: "S1-9F3A-0042", 11: "P", 12: "2.4"}),
    segment("EVN", {1: "I12", 2: "20260702101500"}),
    segment("PID", {1: "1", 3: "T0012345^^^TPP^PI~9990000026^^^NHS", 5: "Sample^Ravi^Kumar^^Mr",
                    7: "19900702", 8: "M", 11: "Flat 2\\S\\3 Mill Lane^Hillview Estate^Hillview^Exampleshire^ZZ99 4BB^GBR^H"}),
    segment("PV1", {1: "1", 2: "N"}),
    segment("RF1", {1: "P", 2: "A^ASAP^HL70280", 3: "SP", 7: "20260702100000",
                    10: "O^Provider ordered^HL70336", 11: "S1-REF-42"}),
    segment("PRD", {1: "RP", 2: "Shah^Priya^^^Dr", 7: "G9999992^GMC"}),
    segment("DG1", {1: "1", 3: "^Social isolation^L", 6: "W"}),
    segment("OBR", {1: "1", 2: "S1-ORD-77", 4: "871731000000106^Referral to social prescribing service^SCT"}),
    segment("NTE", {1: "1", 2: "P", 3: "Money worries: owes \\XC2A3\\300 rent \\T\\ council tax"}),
    segment("NTE", {1: "2", 2: "P", 3: "Lonely since moving\\.br\\Asked about: walking group\\F\\gardening \\E\\ choir \\S\\ lunch club"}),
    segment("ZXX", {1: "SystmOne", 2: "internal routing 7"}),
]
write("ref-i12-systmone.hl7", systmone, "\n")

# Invalid: PID-3 carries only a local identifier (101 at PID-3).
no_nhs = [s if not s.startswith("PID|") else
          segment("PID", {1: "1", 3: "E100235^^^EMIS^PI", 5: "Nobody^Nadia^^^^^L", 7: "19700101", 8: "F"})
          for s in emis]
no_nhs[0] = no_nhs[0].replace("EMIS-000123", "EMIS-000124")
write("ref-i12-no-nhs-number.hl7", no_nhs, "\r")

# Invalid: 9990000019 is 9990000018 with the wrong check digit (102 at PID-3).
bad_check = [s.replace("9990000018", "9990000019") for s in emis]
bad_check[0] = bad_check[0].replace("EMIS-000123", "EMIS-000125")
write("ref-i12-bad-check-digit.hl7", bad_check, "\r")

# Invalid: an ADT^A01, which this endpoint does not take (200 at MSH-9, AR).
adt = [
    segment("MSH", {3: "EMIS", 4: "A81001", 5: "SIGNPOST", 6: "SIGNPOST", 7: "20261120093000",
                    9: "ADT^A01^ADT_A01", 10: "EMIS-000126", 11: "P", 12: "2.5"}),
    segment("EVN", {1: "A01", 2: "20261120093000"}),
    segment("PID", {1: "1", 3: "9990000034^^^NHS^NH", 5: "Person^Pat^^^^^L", 7: "19600101", 8: "U"}),
    segment("PV1", {1: "1", 2: "I"}),
]
write("adt-a01.hl7", adt, "\r")

# Invalid: a REF^I14 (cancel referral), a REF event this endpoint does not take (201 at MSH-9).
i14 = [s.replace("REF^I12^REF_I12", "REF^I14^REF_I12").replace("EMIS-000123", "EMIS-000127")
       for s in emis]
write("ref-i14-cancel.hl7", i14, "\r")

# Invalid framing: the EMIS referral cut off mid-frame (a start block, part of the message,
# no end block), as a connection that dropped would leave it.
whole = "\r".join(emis) + "\r"
with open(os.path.join(HERE, "ref-i12-truncated.mllp"), "wb") as f:
    f.write(b"\x0b" + whole.encode()[:200])
