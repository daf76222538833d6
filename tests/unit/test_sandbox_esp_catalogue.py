"""The sandbox account's Email catalogue: name, customer key and folder (CategoryID) of each Email."""

from __future__ import annotations

from tests.unit.test_sandbox_esp_app import P, retrieve, texts, xml


def test_emails_come_with_name_key_and_folder(mcsb_call):
    root = retrieve(mcsb_call, "Email", ["ID", "Name", "CustomerKey", "CategoryID", "Folder"])
    rows = list(zip(texts(root, "//p:Results/p:CustomerKey"), texts(root, "//p:Results/p:Name"),
                    texts(root, "//p:Results/p:CategoryID"), texts(root, "//p:Results/p:Folder")))
    assert rows == [("cesp-demo-email", "Connector demo email", "5001", "Connector"),
                    ("welcome", "Welcome", "5000", "my emails")]


def test_an_email_is_created_in_an_existing_folder_only(mcsb_call):
    def create(key: str, category: str) -> list[str]:
        _s, body = mcsb_call.soap("Create", f'<CreateRequest {P}><Options/><Objects xsi:type="Email">'
                                  f"<CustomerKey>{key}</CustomerKey><Name>{key}</Name>{category}"
                                  "<Subject>Hi</Subject></Objects></CreateRequest>")
        return texts(xml(body), "//p:Results/p:StatusCode")

    assert create("in-folder", "<CategoryID>5001</CategoryID>") == ["OK"]
    assert create("at-root", "") == ["OK"]
    assert create("nowhere", "<CategoryID>99</CategoryID>") == ["Error"]
    flt = ('<Filter xsi:type="SimpleFilterPart"><Property>CategoryID</Property><SimpleOperator>equals'
           "</SimpleOperator><Value>5001</Value></Filter>")
    keys = texts(retrieve(mcsb_call, "Email", ["CustomerKey"], flt), "//p:Results/p:CustomerKey")
    assert keys == ["cesp-demo-email", "in-folder"]
    assert mcsb_call.app.store.email_by_key("at-root").category_id == 5000
